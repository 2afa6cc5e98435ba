"""The segment query parser, the canonical printer and segment references."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from segments.query import QueryError, parse, referenced_segments, resolve, to_text
from segments.query.ast import (
    Ago, And, Between, Bool, Compare, Count, Did, Duration, Exists, In, Match, Near, Not, Num,
    Or, SegmentRef, Str,
)
from tests.segments.query_strategies import queries
from tidings.errors import InvalidError

US = Compare("country", "=", Str("US"))
DE = Compare("country", "=", Str("DE"))
FR = Compare("country", "=", Str("FR"))


def error_of(text: str) -> tuple[str, int]:
    with pytest.raises(QueryError) as info:
        parse(text)
    assert info.value.details == {"field": "query", "position": info.value.position}
    return info.value.message, info.value.position


# ---- the contract's examples ----------------------------------------------------------------

@pytest.mark.parametrize("text, node", [
    ('country = "US" and app_version >= "3.2"',
     And((US, Compare("app_version", ">=", Str("3.2"))))),
    ('attr.age between 20 and 30 and attr.gender = "f"',
     And((Between("attr.age", Num(20), Num(30)), Compare("attr.gender", "=", Str("f"))))),
    ('did "purchase" >= 3 times in last 30d and not did "uninstall"',
     And((Did("purchase", None, Count(">=", 3), Duration(30, "d")), Not(Did("uninstall"))))),
    ("near(40.71, -74.0, 25km)", Near(40.71, -74.0, 25, "km")),
    ('did "purchase" where (amount > 50) in last 7d',
     Did("purchase", Compare("amount", ">", Num(50)), None, Duration(7, "d"))),
])
def test_contract_examples_parse(text, node):
    assert parse(text) == node
    assert parse(to_text(node)) == node


# ---- structure ------------------------------------------------------------------------------

def test_and_binds_tighter_than_or():
    assert parse('country = "US" or country = "DE" and country = "FR"') == Or((US, And((DE, FR))))
    assert parse('country = "US" and country = "DE" or country = "FR"') == Or((And((US, DE)), FR))


def test_parentheses_group():
    assert parse('(country = "US" or country = "DE") and country = "FR"') == And((Or((US, DE)), FR))
    assert parse('((country = "US"))') == US


def test_not_applies_to_the_next_term_only():
    assert parse('not country = "US" and country = "DE"') == And((Not(US), DE))
    assert parse('not (country = "US" and country = "DE")') == Not(And((US, DE)))
    assert parse('not not country = "US"') == Not(Not(US))


def test_chains_are_flat():
    assert parse('country = "US" or country = "DE" or country = "FR"') == Or((US, DE, FR))


def test_keywords_and_fields_are_case_insensitive():
    assert parse('COUNTRY = "US" AND NOT Did "x" OR Attr.Age In (1) And sms_opt_in = TRUE') == Or((
        And((US, Not(Did("x")))),
        And((In("attr.Age", (Num(1),)), Compare("sms_opt_in", "=", Bool(True))))))


def test_attribute_names_keep_their_case():
    assert parse("attr.Tier exists") == Exists("attr.Tier")
    assert parse("attr.tier exists") != parse("attr.Tier exists")


# ---- conditions -----------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_every_comparison_operator(op):
    assert parse(f"attr.n {op} 1") == Compare("attr.n", op, Num(1))


def test_in_between_exists_contains_starts_with():
    assert parse('city in ("Berlin", "Paris")') == In("city", (Str("Berlin"), Str("Paris")))
    assert parse("attr.n between -1.5 and 2") == Between("attr.n", Num(-1.5), Num(2))
    assert parse("last_seen_at exists") == Exists("last_seen_at")
    assert parse('city contains "erl"') == Match("city", "contains", "erl")
    assert parse('attr.email starts_with "bob@"') == Match("attr.email", "starts_with", "bob@")


def test_every_field_parses():
    for text in ['platform = "ios"', 'device_type = "tablet"', 'os_version > "17"',
                 'app_version <= "3.10.1"', 'language = "en"', 'country = "US"',
                 'region = "CA"', 'city = "Paris"', 'timezone = "Europe/Paris"',
                 "created_at > 30d ago", 'last_seen_at < "2024-05-01"', "local_hour >= 9",
                 "sms_opt_in = true", "push_opt_in != false", "attr._x9 = 1"]:
        node = parse(text)
        assert parse(to_text(node)) == node


def test_values_of_every_kind():
    assert parse('attr.x = "a \\"quoted\\" \\\\ word"') == Compare("attr.x", "=", Str('a "quoted" \\ word'))
    assert parse("attr.x = 'single \\' quoted'") == Compare("attr.x", "=", Str("single ' quoted"))
    assert parse("attr.x = -12") == Compare("attr.x", "=", Num(-12))
    assert parse("attr.x = 0.25") == Compare("attr.x", "=", Num(0.25))
    assert parse("attr.x != false") == Compare("attr.x", "!=", Bool(False))
    for unit in "mhdw":
        assert parse(f"created_at > 3{unit} ago") == Compare(
            "created_at", ">", Ago(Duration(3, unit)))


def test_country_literals_are_upper_cased():
    assert parse('country = "us"') == US
    assert parse('country in ("us", "de")') == In("country", (Str("US"), Str("DE")))
    assert parse('country starts_with "u"') == Match("country", "starts_with", "U")


def test_dates_in_iso_8601():
    for text in ['"2024-05-01"', '"2024-05-01T10:00:00"', '"2024-05-01T10:00:00Z"',
                 '"2024-05-01T10:00:00.123456+02:00"', '"2024-05-01 10:00"']:
        assert parse(f"created_at >= {text}") == Compare("created_at", ">=", Str(text[1:-1]))


def test_did_with_every_part():
    assert parse('did "open"') == Did("open")
    assert parse('did "open" = 0 times') == Did("open", count=Count("=", 0))
    assert parse('did "open" < 3 times in last 12h') == Did(
        "open", count=Count("<", 3), window=Duration(12, "h"))
    assert parse('did "buy" where (sku in ("a", "b") or not price > 9.5) >= 2 times in last 4w') == Did(
        "buy", Or((In("sku", (Str("a"), Str("b"))), Not(Compare("price", ">", Num(9.5))))),
        Count(">=", 2), Duration(4, "w"))


def test_inside_where_field_names_are_event_properties():
    assert parse('did "x" where (country = "us" and local_hour exists)') == Did(
        "x", And((Compare("country", "=", Str("us")), Exists("local_hour"))))


def test_near_in_miles_and_segment_references():
    assert parse("near(-33.9, 151, 10mi)") == Near(-33.9, 151, 10, "mi")
    assert parse('segment("VIPs") and not segment("Churned")') == And((
        SegmentRef("VIPs"), Not(SegmentRef("Churned"))))
    assert parse('  segment("VIPs")').position == 2


def test_local_hour_takes_whole_hours():
    assert parse("local_hour in (0, 23)") == In("local_hour", (Num(0), Num(23)))
    assert parse("local_hour = 9.0") == Compare("local_hour", "=", Num(9))


# ---- errors: message and position -----------------------------------------------------------

@pytest.mark.parametrize("text, message, position", [
    ("", "the query is empty", 0),
    ("   ", "the query is empty", 0),
    ('contry = "US"', 'unknown field "contry", did you mean "country"?', 0),
    ('x and attr. = 1', 'unknown field "x" (custom attributes are written attr.x)', 0),
    ('attr. = 1', 'unknown field "attr."', 0),
    ('atr.age = 1', 'unknown field "atr.age", did you mean "attr.age"?', 0),
    ('country. = "US"', 'unknown field "country.", did you mean "country"?', 0),
    ('attr.1x = 1', 'unknown field "attr.1x": attribute names start with a letter or "_" and '
                    'hold only letters, digits and "_"', 0),
    ('attr.a.b = 1', 'unknown field "attr.a.b": attribute names start with a letter or "_" and '
                     'hold only letters, digits and "_"', 0),
    ('local_hour >= "9"', 'expected a number after ">="', 14),
    ('country = "US', "unterminated string", 10),
    ('(country = "US"', 'expected ")"', 15),
    ('country in ("US" "DE")', 'expected ")"', 17),
    ('country = "US")', 'unexpected ")" (no "(" to close)', 14),
    ('country = 5', 'expected a string after "=" (country is text)', 10),
    ('platform = true', 'expected a string after "=" (platform is text)', 11),
    ('country "US"', 'expected =, !=, <, <=, >, >=, in, between, exists, contains or starts_with '
                     'after "country"', 8),
    ('country = "US" city = "X"', 'expected "and", "or" or the end of the query, found "city"', 15),
    ('country = "US" and', "expected a condition, found the end of the query", 18),
    ("not", "expected a condition, found the end of the query", 3),
    ('and country = "US"', 'expected a condition, found "and"', 0),
    ('= "US"', 'expected a condition, found "="', 0),
    ('country = @', 'unexpected character "@"', 10),
    ('country ! "US"', 'unexpected "!" (did you mean "!="?)', 8),
    ('country =', 'expected a string after "=" (country is text)', 9),
    ('country in ()', 'expected a string after "(" (country is text)', 12),
    ("attr.age >= ", 'expected a number or a string after ">="', 12),
    ("attr.age in (1,)", 'expected a value after ","', 15),
    ("attr.age between and 2", 'expected a number or a string after "between"', 17),
    ("local_hour <", 'expected a number after "<"', 12),
    ("push_opt_in = ", 'expected true or false after "="', 14),
    ('city = "a\\qb"', 'unknown escape "\\q" in string (use \\" or \\\\)', 9),
    ('city = "a\x00"', "strings may not contain the NUL character", 7),
    ("attr.x = 1.", 'malformed number "1."', 9),
    ("attr.x = 1e999", 'unknown unit "e999" in "1e999" (durations use m, h, d or w, as in 7d)', 9),
    ("attr.x = " + "9" * 400, f"the number {'9' * 400} is too large", 9),
    ("sms_opt_in > true", "sms_opt_in only takes = or != with true or false", 11),
    ("push_opt_in in (true)", "push_opt_in only takes = or != with true or false", 12),
    ("sms_opt_in exists", "sms_opt_in only takes = or != with true or false", 11),
    ("sms_opt_in = 1", 'expected true or false after "="', 13),
    ("attr.vip < true", "true and false only go with = or !=, not <", 11),
    ("attr.x between true and false", "true and false only go with = or !=, not between", 15),
    ('attr.x between 1 and "z"', "between needs two values of the same kind", 21),
    ('created_at > "yesterday"', '"yesterday" is not a date (expected "2024-05-01", '
                                 '"2024-05-01T10:00:00Z" or a duration like 7d ago)', 13),
    ("created_at > 7", 'expected a date ("2024-05-01") or a duration like 7d ago after ">"', 13),
    ("created_at > 7d", 'expected "ago" after "7d"', 15),
    ("created_at > 7y ago", 'unknown unit "y" in "7y" (durations use m, h, d or w, as in 7d)', 13),
    ("created_at > 1.5d ago", 'a duration takes a whole number, as in 7d, not "1.5d"', 13),
    ("created_at > 99999999w ago", '"99999999w" is too long (at most 1000 years)', 13),
    ('last_seen_at contains "2024"', "contains only works on text fields, not on last_seen_at", 13),
    ('os_version starts_with "3"', "starts_with only works on text fields, not on os_version", 11),
    ("local_hour = 24", "local_hour takes a whole hour from 0 to 23", 13),
    ("local_hour = 9.5", "local_hour takes a whole hour from 0 to 23", 13),
    ("local_hour = -1", "local_hour takes a whole hour from 0 to 23", 13),
    ('os_version > "beta"', '"beta" is not a version (expected something like "3.2.1")', 13),
    ("app_version > 3", 'expected a version string like "3.2" after ">"', 14),
    ("attr.signup > 7d ago", '"7d ago" only works on created_at and last_seen_at; compare '
                             "attr.signup with a string, a number, true or false", 14),
    ("did purchase", 'expected an event name in quotes after "did"', 4),
    ('did ""', "the event name is empty", 4),
    ('did "x" != 3 times', "a count takes >=, >, =, < or <=, not !=", 8),
    ('did "x" >= 3', 'expected "times" after "3"', 12),
    ('did "x" >= 2.5 times', 'expected a whole number of times after ">="', 11),
    ('did "x" >= -1 times', 'expected a whole number of times after ">="', 11),
    ('did "x" in last 7', 'expected a duration like 7d after "last"', 16),
    ('did "x" in 7d', 'expected "last" after "in"', 11),
    ('did "x" in last 7km', 'unknown unit "km" in "7km" (durations use m, h, d or w, as in 7d)', 16),
    ('did "x" where amount > 1', 'expected "(" after "where"', 14),
    ('did "x" where (did "y")', 'expected an event property name, found "did"', 15),
    ('did "x" where (attr.a = 1)', '"attr.a" is not an event property name (use a plain name '
                                   'like amount)', 15),
    ('did "x" where (amount > 1', 'expected ")"', 25),
    ('did "x" in last 7d >= 2 times', 'expected "and", "or" or the end of the query, found ">="',
     19),
    ("near(40.7, -74, 25)", 'expected a distance like 25km or 10mi after ","', 16),
    ("near(40.7, -74, 25ft)", 'expected a distance like 25km or 10mi after ","', 16),
    ("near(40.7 -74, 25km)", 'expected "," after "40.7"', 10),
    ("near(91, 0, 1km)", "latitude must be between -90 and 90", 5),
    ("near(0, -180.5, 1km)", "longitude must be between -180 and 180", 8),
    ("near(0, 0, -1km)", "a distance can't be negative", 11),
    ('near(0, 0, 1km', 'expected ")"', 14),
    ("segment(vips)", 'expected a segment name in quotes after "("', 8),
    ("(" * 100 + 'country = "US"' + ")" * 100, "the query is nested too deeply", 65),
])
def test_errors_say_what_and_where(text, message, position):
    assert error_of(text) == (message, position)


def test_query_error_is_an_invalid_error_for_the_api():
    with pytest.raises(InvalidError) as info:
        parse('contry = "US"')
    assert info.value.status == 422
    assert info.value.details == {"field": "query", "position": 0}


def test_errors_point_into_longer_queries():
    text = 'country = "US" and (did "open" >= 2 times or lokal_hour < 5)'
    assert error_of(text) == ('unknown field "lokal_hour", did you mean "local_hour"?',
                              text.index("lokal_hour"))


# ---- canonical text -------------------------------------------------------------------------

def test_to_text_is_canonical():
    node = parse("NOT ( Country='us' OR attr.n>=1.50 )AND did 'a\"b' WHERE(x exists)>=2 TIMES")
    assert to_text(node) == ('not (country = "US" or attr.n >= 1.5) and '
                             'did "a\\"b" where (x exists) >= 2 times')


def test_to_text_keeps_nesting_that_matters():
    node = And((US, And((DE, FR))))
    assert to_text(node) == 'country = "US" and (country = "DE" and country = "FR")'
    assert parse(to_text(node)) == node
    assert to_text(Or((US, Or((DE, FR))))) == 'country = "US" or (country = "DE" or country = "FR")'


def test_numbers_print_without_exponents():
    for value in (1e20, 1e-7, -0.0, 0.1 + 0.2, 12345678901234567890, 5e-324):
        text = to_text(Compare("attr.x", "=", Num(value)))
        assert "e" not in text.split("=", 1)[1]
        assert parse(text) == Compare("attr.x", "=", Num(value))


def test_asts_are_hashable_values():
    assert len({parse('country = "US"'), parse("country = 'us'"), parse('country="US"')}) == 1
    assert parse('segment("a")') == SegmentRef("a", position=99)


@settings(max_examples=300, deadline=None)
@given(node=queries)
def test_parse_reads_back_what_to_text_prints(node):
    assert parse(to_text(node)) == node


# ---- segment references ---------------------------------------------------------------------

def lookup_in(segments: dict[str, str]):
    return segments.get


def test_references_are_inlined():
    segments = {"us": 'country = "US"', "buyers": 'did "purchase" and segment("us")'}
    node = resolve(parse('segment("buyers") or city = "Paris"'), lookup_in(segments))
    assert node == Or((And((Did("purchase"), US)), Compare("city", "=", Str("Paris"))))
    assert referenced_segments(parse('segment("a") and not (segment("b") or segment("a"))')) == {
        "a", "b"}


def test_a_segment_used_twice_is_inlined_twice():
    node = resolve(parse('segment("us") and not segment("us")'), lookup_in({"us": 'country = "US"'}))
    assert node == And((US, Not(US)))


def test_unknown_segment_is_reported_at_its_reference():
    text = 'country = "US" and segment("nope")'
    with pytest.raises(QueryError) as info:
        resolve(parse(text), lookup_in({}))
    assert (info.value.message, info.value.position) == ('unknown segment "nope"', 19)


def test_a_segment_referring_to_itself():
    with pytest.raises(QueryError) as info:
        resolve(parse('segment("A")'), lookup_in({"A": 'segment("A")'}), name="A")
    assert info.value.message == 'segment "A" refers to itself'
    with pytest.raises(QueryError) as info:
        resolve(parse('segment("A")'), lookup_in({"A": 'segment("A")'}))
    assert info.value.message == 'segment "A" refers to itself'


def test_cycles_are_reported_with_the_way_round():
    segments = {"A": 'segment("B")', "B": 'country = "US" or segment("A")'}
    text = 'city = "x" and segment("B")'
    with pytest.raises(QueryError) as info:
        resolve(parse(text), lookup_in(segments), name="A")
    assert info.value.message == 'segment "A" refers to itself through "B"'
    assert info.value.position == text.index("segment(")
    segments["C"] = 'segment("A")'
    segments["B"] = 'segment("C")'
    with pytest.raises(QueryError) as info:
        resolve(parse('segment("B")'), lookup_in(segments), name="A")
    assert info.value.message == 'segment "A" refers to itself through "B", "C"'
    with pytest.raises(QueryError) as info:  # a cycle the outer query is not part of
        resolve(parse('segment("B")'), lookup_in(segments))
    assert info.value.message == 'segment "B" refers to itself through "C", "A"'


def test_errors_inside_a_referenced_segment_point_at_the_reference():
    segments = {"bad": 'contry = "US"', "outer": 'city = "x" or segment("bad")',
                "lost": 'segment("nowhere")'}
    text = 'push_opt_in = true and segment("outer")'
    with pytest.raises(QueryError) as info:
        resolve(parse(text), lookup_in(segments))
    assert info.value.message == 'in segment "bad": unknown field "contry", did you mean "country"?'
    assert info.value.details == {"field": "query", "position": 23}
    with pytest.raises(QueryError) as info:
        resolve(parse('segment("lost")'), lookup_in(segments))
    assert (info.value.message, info.value.position) == (
        'in segment "lost": unknown segment "nowhere"', 0)


def test_resolving_a_query_without_references_changes_nothing():
    node = parse('country = "US" and not did "x"')
    assert resolve(node, lookup_in({})) is node
