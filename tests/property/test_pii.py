"""Properties of the PII detector: what logs are full of survives, what is personal does not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from string import ascii_uppercase, digits

from hypothesis import given
from hypothesis import strategies as st

from stalwart.core.pii import IBAN_LENGTHS, PIIMasker, valid_iban

MASKER = PIIMasker("mask")


def _survives(text: str) -> None:
    assert MASKER.text(text) == text


@given(st.integers())
def test_integers_survive(n: int) -> None:
    _survives(str(n))
    _survives(f"processed {n} rows")


@given(st.floats(allow_nan=False))
def test_floats_and_durations_survive(x: float) -> None:
    _survives(repr(x))
    _survives(f"took {x} s")
    _survives(f"{x:.3f}ms")


@given(st.uuids())
def test_uuids_and_trace_ids_survive(u: uuid.UUID) -> None:
    _survives(str(u))
    _survives(u.hex)
    _survives(f"trace {u.hex} job {u}")


@given(
    st.datetimes(timezones=st.sampled_from([UTC, None])),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
def test_timestamps_dates_and_durations_survive(moment: datetime, delta: timedelta) -> None:
    _survives(moment.isoformat())
    _survives(f"{moment:%Y-%m-%d %H:%M:%S.%f}")
    _survives(moment.date().isoformat())
    _survives(f"{moment.timestamp()}")
    _survives(str(delta))


@given(st.lists(st.integers(0, 999), min_size=2, max_size=5))
def test_version_strings_survive(parts: list[int]) -> None:
    _survives(".".join(map(str, parts)))
    _survives("v" + ".".join(map(str, parts)))


local = st.text(ascii_uppercase.lower() + digits + "._+-", min_size=1, max_size=20).filter(
    lambda s: s[0].isalnum()
)
label = st.text(ascii_uppercase.lower() + digits, min_size=1, max_size=12)
tld = st.text(ascii_uppercase.lower(), min_size=2, max_size=6)


@given(local, label, tld, st.sampled_from(["{}", "<{}>", "mailto:{}", "to {}, thanks"]))
def test_email_addresses_never_survive(name: str, domain: str, top: str, around: str) -> None:
    address = f"{name}@{domain}.{top}"
    masked = MASKER.text(around.format(address))
    assert masked == around.format("[email]")


def _iban(country: str, bban: str) -> str:
    """A valid IBAN: the check digits computed for ``bban``."""
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{country}{98 - number % 97:02d}{bban}"


bbans = st.sampled_from(sorted(IBAN_LENGTHS)).flatmap(
    lambda c: st.tuples(
        st.just(c), st.text(digits + ascii_uppercase, min_size=IBAN_LENGTHS[c] - 4,
                            max_size=IBAN_LENGTHS[c] - 4)
    )
)  # fmt: skip


@given(bbans, st.booleans())
def test_valid_ibans_are_masked_and_one_changed_character_is_not(
    case: tuple[str, str], spaced: bool
) -> None:
    country, bban = case
    iban = _iban(country, bban)
    assert valid_iban(iban)
    shown = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if spaced else iban
    assert MASKER.text(f"pay to {shown} today") == "pay to [iban] today"
    # One digit changed (here: the check digits' second): mod-97 catches every such typo.
    check = iban[3]
    typo = iban[:3] + ("0" if check != "0" else "1") + iban[4:]
    assert not valid_iban(typo)
    assert "[iban]" not in MASKER.text(typo)
