"""Fast acceptance of phone numbers already in E.164 form, with `phonenumbers` as the authority.

`phonenumbers.parse` + `is_valid_number` + `format_number` cost ~25 us a number (most of a CSV
import's CPU): a lenient parser built for any way of writing a number, then one look-up and
regex compile-cache hit per pattern tried. For the common input "+" followed by digits only,
the same decision comes down to the steps below, taken here with the same metadata, its
patterns compiled once per calling code:

1. the calling code: the shortest 1-3 digit prefix the library knows (as `parse` extracts it);
2. the rest is the national significant number as written, when it has 2-17 digits, does not
   start with 0 (Italian leading zeros) and the national prefix for parsing of the calling
   code's main region does not match at its start (`parse` could strip it);
3. valid as `is_valid_number` decides: the region (the only one of the calling code, else the
   first whose leading digits match, or whose patterns accept the number), then the general
   pattern and any type pattern of that region, each tried only for its possible lengths.

`e164` answers the number (E.164 output is then the input itself) or None, meaning "ask
phonenumbers", which also words the error of a rejected number: so accept/reject decisions and
output are those of the plain path by construction wherever this answers None, and
tests/segments/test_phones.py checks its answers against the plain path around every example
number of every region and on random input.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata
from phonenumbers.phonenumberutil import REGION_CODE_FOR_NON_GEO_ENTITY

_SHAPE = re.compile(r"\+[1-9][0-9]{2,19}")  # [0-9]: ASCII digits only (others take the plain path)
_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
          "fixed_line")
_NSN_LENGTHS = range(2, 18)  # phonenumbers' _MIN_LENGTH_FOR_NSN .. _MAX_LENGTH_FOR_NSN

Valid = Callable[[str], bool]


def e164(value: str) -> str | None:
    """`value` when it is a valid number in E.164 form that phonenumbers keeps as it is, else None."""
    if _SHAPE.fullmatch(value) is None:
        return None
    digits = value[1:]
    for size in (1, 2, 3):  # `_extract_country_code`: the first prefix that is a calling code
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    check = _checks.get(code)
    if check is None:
        check = _checks[code] = _compile(code)
    return value if check(digits[size:]) else None


_checks: dict[int, Valid] = {}


def _never(nsn: str) -> bool:
    return False


def _compile(code: int) -> Valid:
    """The decision for numbers of one calling code: True only where the plain path accepts them as written."""
    regions = COUNTRY_CODE_TO_REGION_CODE[code]
    main = PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0])
    if main is None:
        return _never
    prefix = re.compile(main.national_prefix_for_parsing) if main.national_prefix_for_parsing else None
    valid = _region_choice(code, regions)

    def check(nsn: str) -> bool:
        if not 2 <= len(nsn) <= 17 or nsn[0] == "0":
            return False
        if prefix is not None and prefix.match(nsn):
            return False
        return valid(nsn)

    return check


def _region_choice(code: int, regions: tuple[str, ...]) -> Valid:
    """`is_valid_number` for a national significant number of this calling code."""
    if len(regions) == 1:  # `region_code_for_number` takes it without looking at the number
        return _for_region(code, regions[0])
    choices = []  # `_region_code_for_number_from_list`
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        leading = re.compile(metadata.leading_digits) if metadata.leading_digits is not None else None
        choices.append((leading, _type_known(metadata), _for_region(code, region), _at_home(code, region)))

    def valid(nsn: str) -> bool:
        for leading, known, for_region, at_home in choices:
            if leading is not None:
                if leading.match(nsn):
                    return for_region(nsn)
            elif known(nsn):  # `for_region` would ask `known` of the same metadata again
                return at_home
        return False

    return valid


def _for_region(code: int, region: str) -> Valid:
    """`is_valid_number_for_region`."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region.upper())
    if metadata is None or not _at_home(code, region):
        return _never
    return _type_known(metadata)


def _at_home(code: int, region: str) -> bool:
    """The calling code is the region's own, as `is_valid_number_for_region` checks."""
    if region == REGION_CODE_FOR_NON_GEO_ENTITY:
        return True
    home = PhoneMetadata.metadata_for_region(region.upper(), None)
    return home is not None and home.country_code == code


def _type_known(metadata) -> Valid:
    """`_number_type_helper(nsn, metadata) != PhoneNumberType.UNKNOWN`, with patterns grouped by length.

    That helper answers UNKNOWN when the general pattern fails, or when every type pattern it
    tries fails: all of `_TYPES`, then mobile unless its pattern is the fixed-line one.
    """
    descs = [getattr(metadata, name) for name in _TYPES]
    if not metadata.same_mobile_and_fixed_line_pattern:
        descs.append(metadata.mobile)
    general = _desc(metadata.general_desc)
    types = [d for d in map(_desc, descs) if d is not None]
    by_length: dict[int, tuple[Valid, Valid]] = {}
    if general is not None:
        for length in _NSN_LENGTHS:
            if general[0] is None or length in general[0]:
                patterns = [p for lengths, p in types if lengths is None or length in lengths]
                if patterns:
                    by_length[length] = (_full_match(general[1]), _full_match(*patterns))

    def known(nsn: str) -> bool:
        found = by_length.get(len(nsn))
        return found is not None and found[0](nsn) and found[1](nsn)

    return known


_PLAIN_PATTERN = re.compile(r"[^\\()]*(?:(?:\\[^1-9]|\((?!\?P|\?[aiLmsux])|\))[^\\()]*)*")


def _full_match(*patterns: str) -> Valid:
    """Whether a number matches any of these patterns whole (`_match_national_number`).

    One alternation costs one call instead of one per pattern; it says the same as the patterns
    one by one where none refers to a group by number or name or sets flags (phonenumbers' do not).
    """
    if len(patterns) > 1 and not all(_PLAIN_PATTERN.fullmatch(p) for p in patterns):
        compiled = [re.compile(p).fullmatch for p in patterns]
        return lambda nsn: any(match(nsn) is not None for match in compiled)
    match = re.compile("|".join(f"(?:{p})" for p in patterns)).fullmatch
    return lambda nsn: match(nsn) is not None


def _desc(desc) -> tuple[frozenset[int] | None, str] | None:
    """(possible lengths or None for any, pattern) of a number description; None: it never matches.

    As `_is_number_matching_desc` and `_match_national_number` read it.
    """
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = frozenset(desc.possible_length) if len(desc.possible_length) > 0 else None
    return lengths, desc.national_number_pattern
