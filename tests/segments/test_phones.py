"""The E.164 fast path agrees with phonenumbers: wherever it answers, the plain path accepts the same number."""

from __future__ import annotations

import random

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from segments import phones
from segments.schemas import _phone

plain = _phone.__wrapped__  # the plain path, without its cache: (E.164 or None, error or None)


def agrees(value: str) -> bool:
    """Checks one input; True when the fast path took it."""
    fast = phones.e164(value)
    if fast is None:
        return False
    assert plain(value, None) == (fast, None), value
    assert plain(value, "US") == (fast, None), value  # a "+" number ignores the country
    return True


def examples() -> list[str]:
    """Every example number phonenumbers has, of every type, for every region and non-geographic code."""
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        numbers += [phonenumbers.example_number_for_type(region, kind) for kind in range(12)]
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        numbers.append(phonenumbers.example_number_for_non_geo_entity(code))
    return sorted({phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) for n in numbers if n})


def test_every_example_number_and_every_one_digit_change_of_it_agree():
    taken = checked = 0
    for number in examples():
        variants = {number, number + "0", number + "9", number[:-1]}
        for i in range(1, len(number)):
            variants.update(number[:i] + d + number[i + 1:] for d in "0123456789")
        for value in sorted(variants):
            checked += 1
            taken += agrees(value)
    assert checked > 100_000 and taken > checked // 4  # the fast path does take most valid numbers


def test_example_numbers_written_with_a_national_prefix_agree():
    from phonenumbers import PhoneMetadata

    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region)
        prefixes = {metadata.national_prefix or "", *"0123456789"}
        for kind in range(12):
            number = phonenumbers.example_number_for_type(region, kind)
            if number:
                nsn = phonenumbers.national_significant_number(number)
                for prefix in sorted(prefixes):
                    agrees(f"+{metadata.country_code}{prefix}{nsn}")


def test_random_digits_after_every_calling_code_agree():
    rng = random.Random(20261123)
    taken = 0
    for code in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE):
        for length in range(1, 19):
            for _ in range(6):
                taken += agrees(f"+{code}{rng.randrange(10 ** length):0{length}d}")
    assert taken > 500


def test_north_american_numbers_agree():  # the shape of the import benchmark's numbers, and their neighbours
    rng = random.Random(7)
    for _ in range(20_000):
        assert agrees(f"+1{rng.randrange(200, 1000)}{rng.randrange(10 ** 7):07d}") in (True, False)
    assert agrees("+14155550134") and agrees("+442079460958") and agrees("+33612345678")


@settings(max_examples=1000, deadline=None)
@given(st.one_of(
    st.text(alphabet="+0123456789", max_size=22),
    st.from_regex(r"\+[0-9]{3,20}", fullmatch=True),
    st.text(alphabet="+0123456789 -()#x\uff10\uff0b\u0660", max_size=22),
))
def test_random_input_agrees(value):
    agrees(value)


def test_other_shapes_take_the_plain_path():
    for value in ["", "+", "+1", "+12", "14155550134", " +14155550134", "+14155550134 ", "+1 415 555 0134",
                  "+1415555013x", "\uff0b14155550134", "+1415555\uff10134", "+014155550134", "+1" + "5" * 40,
                  "+3906123456", "+4407911123456"]:
        assert phones.e164(value) is None, value
