"""A small OpenID Connect provider for tests: the third-party edge of an ``st.login`` sign-in.

Discovery, ``/authorize`` (approves at once and sends the browser back with a code and the
``state``), ``/token`` (an RS256-signed id_token with iss, sub, aud, nonce, email and name;
PKCE and the client's credentials are checked) and ``/jwks``. Whom it signs in is
``provider.user``, set by the test (a ``user=`` query parameter on ``/authorize`` overrides it
for one sign-in). It runs on a free local port in a thread of the test process.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.conftest import free_port

CLIENT_ID = "stalwart-test"
CLIENT_SECRET = "test-client-secret-0123456789"


@dataclass
class OidcUser:
    """Someone the provider vouches for."""

    sub: str
    email: str = ""
    name: str = ""


@dataclass
class FakeOidcProvider:
    """The provider's state: who signs in, the codes it gave out, what it was asked."""

    port: int = field(default_factory=free_port)
    user: OidcUser = field(default_factory=lambda: OidcUser("alice-sub", "alice@example.com"))
    users: dict[str, OidcUser] = field(default_factory=dict)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    tokens_issued: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def settings(self, *, name: str = "testidp", label: str = "Test IdP") -> dict[str, str]:
        """The app's STALWART_OIDC_* settings for this provider (the app on 127.0.0.1)."""
        return {
            "STALWART_OIDC_PROVIDER_NAME": name,
            "STALWART_OIDC_PROVIDER_LABEL": label,
            "STALWART_OIDC_CLIENT_ID": CLIENT_ID,
            "STALWART_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "STALWART_OIDC_METADATA_URL": self.metadata_url,
            "STALWART_OIDC_REDIRECT_URI": "http://127.0.0.1:{port}/oauth2callback",
        }

    # -- the endpoints ------------------------------------------------------------------------

    async def discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        if params.get("client_id") != CLIENT_ID or params.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        who = self.users.get(params.get("user", ""), self.user)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "user": who,
            "nonce": params.get("nonce"),
            "redirect_uri": params["redirect_uri"],
            "challenge": params.get("code_challenge"),
        }
        query = urlencode({"code": code, "state": params.get("state", "")})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", status_code=302)

    async def token(self, request: Request) -> Response:
        form = dict(await request.form())
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(str(form.get("code", "")), None)
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if grant["challenge"]:
            verifier = str(form.get("code_verifier", "")).encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
            if digest.decode() != grant["challenge"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
        who: OidcUser = grant["user"]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": who.sub,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "email": who.email,
            "name": who.name,
        }
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
        self.tokens_issued += 1
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            },
            headers={"Cache-Control": "no-store"},
        )

    # -- running ------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    def start(self) -> FakeOidcProvider:
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-oidc", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OIDC provider did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
