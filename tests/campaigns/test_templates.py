"""Content templates: rendering, validation with paths and lines, caps, and the sandbox."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import templates
from campaigns.templates import (
    MAX_TEXT_LENGTH,
    SMS_MAX_LENGTH,
    InvalidTemplateError,
    RenderError,
    TemplateProblem,
    build_context,
    compile_content,
    render_string,
    validate_content,
)
from tidings.errors import InvalidError, TidingsError

PHONE = "+15551234567"


@pytest.fixture
def context():
    return build_context(
        {"language": "en", "country": "US", "city": None, "timezone": "America/New_York",
         "phone": PHONE},
        {"first_name": "Ann", "loyalty": "gold", "points": 120, "ratio": 0.25, "tags": ["a", "b"],
         "country": "XX", "prefs": {"color": "blue"}, "bio": "<b>hi</b> & bye"},
        external_id="user-1",
        campaign={"id": 7, "name": "Spring sale", "secret": "nope"},
        variant="B",
    )  # fmt: skip


def render(source, context, **kwargs):
    return render_string(source, context, **kwargs)


# -- context ---------------------------------------------------------------------------------


def test_context_has_user_fields_attributes_campaign_and_variant(context):
    user = context["user"]
    assert user["id"] == "user-1"
    assert user["first_name"] == "Ann"
    assert user["attr"]["loyalty"] == "gold"
    assert user["language"] == "en"
    assert user["timezone"] == "America/New_York"
    assert context["campaign"] == {"id": 7, "name": "Spring sale"}
    assert context["variant"] == "B"


def test_context_never_holds_the_phone_number(context):
    assert "phone" not in context["user"]
    assert PHONE not in json.dumps(context)


def test_custom_attributes_do_not_shadow_built_in_fields(context):
    assert context["user"]["country"] == "US"
    assert context["user"]["attr"]["country"] == "XX"
    ctx = build_context({}, {"id": "forged", "attr": "x", "phone": "+1999"}, external_id="u")
    assert ctx["user"]["id"] == "u"
    assert ctx["user"]["attr"] == {"id": "forged", "attr": "x", "phone": "+1999"}
    assert "phone" not in ctx["user"]


def test_context_is_built_fresh_from_plain_values():
    import datetime as dt
    from decimal import Decimal

    from markupsafe import Markup

    tags = ["a"]
    ctx = build_context(
        {"country": "FR"},
        {"tags": tags, "when": dt.date(2024, 1, 2), "price": Decimal("1.5"), "html": Markup("<b>"),
         "set": {"b", "a"}, "gone": None},
        external_id=42,
    )  # fmt: skip
    tags.append("mutated")
    assert ctx["user"]["tags"] == ["a"]
    assert ctx["user"]["when"] == "2024-01-02"
    assert ctx["user"]["price"] == "1.5"
    assert type(ctx["user"]["html"]) is str
    assert ctx["user"]["set"] == ["a", "b"]
    assert "gone" not in ctx["user"] and "gone" not in ctx["user"]["attr"]
    assert ctx["user"]["id"] == "42"

    def check(value):
        assert type(value) in (dict, list, str, int, float, bool, type(None)), value
        if isinstance(value, dict):
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    check(ctx)


# -- rendering -------------------------------------------------------------------------------


def test_default_filter_fills_missing_and_null_fields(context):
    assert render('Hi {{ user.first_name | default("there") }}', context) == "Hi Ann"
    assert render('Hi {{ user.last_name | default("there") }}', context) == "Hi there"
    assert render('{{ user.city | default("your city") }}', context) == "your city"
    bare = build_context({}, {}, external_id="u")
    assert render('Hi {{ user.first_name | default("there") }}!', bare) == "Hi there!"


def test_missing_values_render_empty_even_when_chained(context):
    assert render("[{{ user.nickname }}]", context) == "[]"
    assert render("[{{ user.attr.missing.deeper.still }}]", context) == "[]"
    assert render('{{ user.attr.missing.deeper | default("x") }}', context) == "x"
    assert render("[{{ campaign.nope }}{{ nothing }}]", context) == "[]"
    assert render("[{{ none }}]", context) == "[]"


def test_nested_attributes_numbers_and_logic(context):
    assert render("{{ user.attr.loyalty }} / {{ user.loyalty }}", context) == "gold / gold"
    assert render("{{ user.attr.prefs.color }}", context) == "blue"
    assert (
        render("{{ user.points }} {{ user.points * 2 }} {{ user.ratio }}", context)
        == "120 240 0.25"
    )
    assert render("{{ (user.points / 7) | round(2) }}", context) == "17.14"
    assert render('{{ "%.1f" | format(user.ratio) }}', context) == "0.2"
    assert render("{% if user.points > 100 %}VIP{% else %}hi{% endif %}", context) == "VIP"
    assert render("{% for t in user.tags %}{{ loop.index }}{{ t }}{% endfor %}", context) == "1a2b"
    assert render('{{ user.tags | join(", ") | upper }}', context) == "A, B"
    assert render("{{ campaign.name }} / {{ variant }}", context) == "Spring sale / B"


def test_lists_and_dicts_render_as_json(context):
    assert render("{{ user.tags }}", context) == '["a", "b"]'
    assert render("{{ user.prefs }}", context) == '{"color": "blue"}'


def test_text_kind_does_not_escape_and_html_kind_does(context):
    assert render("{{ user.bio }}", context) == "<b>hi</b> & bye"
    assert (
        render("<p>{{ user.bio }}</p>", context, kind="html")
        == "<p>&lt;b&gt;hi&lt;/b&gt; &amp; bye</p>"
    )


def test_newlines_are_kept(context):
    assert render("Hi {{ user.first_name }}\nBye\n", context) == "Hi Ann\nBye\n"


def test_compiled_content_keeps_the_shape_and_passes_non_strings_through(context):
    content = {
        "layout": "modal",
        "title": "Hi {{ user.first_name }}",
        "html": "<h1>{{ user.bio }}</h1>",
        "buttons": [
            {"label": "Go {{ user.loyalty }}", "action": "app://o/{{ user.id | urlencode }}"}
        ],
        "expires_hours": 24,
        "data": {"flag": True, "ratio": 0.5, "none": None, "items": [1, "x{{ 1 + 1 }}"]},
    }
    compiled = compile_content(content)
    rendered = compiled.render(context)
    assert rendered == {
        "layout": "modal",
        "title": "Hi Ann",
        "html": "<h1>&lt;b&gt;hi&lt;/b&gt; &amp; bye</h1>",
        "buttons": [{"label": "Go gold", "action": "app://o/user-1"}],
        "expires_hours": 24,
        "data": {"flag": True, "ratio": 0.5, "none": None, "items": [1, "x2"]},
    }
    assert type(rendered["html"]) is str
    rendered["buttons"].append("changed")
    assert compiled.render(context)["buttons"] == [{"label": "Go gold", "action": "app://o/user-1"}]


def test_kind_for_path_chooses_html(context):
    compiled = compile_content(
        {"body": "{{ user.bio }}", "other": "{{ user.bio }}"},
        kind_for_path=lambda path: "html" if path == "body" else "text",
    )
    assert compiled.render(context) == {
        "body": "&lt;b&gt;hi&lt;/b&gt; &amp; bye",
        "other": "<b>hi</b> & bye",
    }
    with pytest.raises(ValueError, match="not 'text' or 'html'"):
        compile_content({"body": "x"}, kind_for_path=lambda path: "xml")


def test_templates_are_parsed_once_per_source():
    source = "cache probe {{ user.id }} 8c1f"
    compile_content({"body": source})
    before = templates._compile.cache_info()
    compile_content({"body": source, "title": source})
    after = templates._compile.cache_info()
    assert after.hits == before.hits + 2
    assert after.misses == before.misses


# -- validation ------------------------------------------------------------------------------


def test_validation_names_the_path_and_line_of_each_problem():
    content = {
        "title": "fine {{ user.id }}",
        "body": "line one\n{{ user.name }\n",
        "buttons": [
            {"label": "ok", "action": "x"},
            {"label": "{% if %}", "action": "{{ x | nope }}"},
        ],
        "hooks": {"promo.banner": "{{ 1 +"},
        "expires_hours": 5,
    }
    problems = validate_content(content)
    assert [(p.path, p.line) for p in problems] == [
        ("body", 2),
        ("buttons[1].label", 1),
        ("buttons[1].action", 1),
        ('hooks["promo.banner"]', 1),
    ]
    assert problems[0].message == "unexpected '}'"
    assert str(problems[0]) == "content.body line 2: unexpected '}'"
    assert problems[0].describe('variant "B": content') == (
        "variant \"B\": content.body line 2: unexpected '}'"
    )
    assert "No filter named 'nope'" in problems[2].message
    assert problems[0].as_dict() == {"path": "body", "line": 2, "message": "unexpected '}'"}


def test_compile_content_raises_a_422_listing_every_problem():
    with pytest.raises(InvalidTemplateError) as caught:
        compile_content({"title": "{{", "body": "{% endif %}"})
    error = caught.value
    assert isinstance(error, InvalidError) and error.status == 422
    assert [p["path"] for p in error.details["problems"]] == ["title", "body"]
    assert error.message.startswith("content.title line 1: ")


def test_valid_content_has_no_problems():
    assert validate_content({"body": "Hi {{ user.first_name | default('there') }}", "n": 1}) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% import 'os' as os %}", "'{% import %}' is not allowed"),
        ("{% from 'os' import popen %}", "'{% import %}' is not allowed"),
        ("{% include 'x' %}", "'{% include %}' is not allowed"),
        ("{% extends 'x' %}", "'{% extends %}' is not allowed"),
        ("{% macro m() %}{% endmacro %}", "'{% macro %}' is not allowed"),
        ("{% block b %}{% endblock %}", "'{% block %}' is not allowed"),
        ("{% call foo() %}{% endcall %}", "'{% call %}' is not allowed"),
        ("{% for x in y recursive %}{% endfor %}", "recursive loops are not allowed"),
        ("ok\n{{ self }}", "'self' is not available"),
        ("{% for x in y %}{{ loop }}{% endfor %}", "not loop itself"),
        ("{{ x | safe }}", "No filter named 'safe'"),
        ("{{ x | attr('y') }}", "No filter named 'attr'"),
        ("{{ x | random }}", "No filter named 'random'"),
    ],
)
def test_constructs_content_may_not_use_are_refused_at_save_time(source, message):
    [problem] = validate_content({"body": source})
    assert message in problem.message
    assert problem.line == source.count("\n") + 1


def test_overlong_template_source_is_a_problem():
    [problem] = validate_content({"body": "x" * (2 * MAX_TEXT_LENGTH + 1)})
    assert problem.path == "body" and "longer than" in problem.message


# -- render errors and caps ------------------------------------------------------------------


def test_render_errors_carry_path_line_and_message(context):
    compiled = compile_content({"title": "ok", "body": "line one\n{{ 1 / 0 }}"})
    with pytest.raises(RenderError) as caught:
        compiled.render(context)
    error = caught.value
    assert (error.path, error.line) == ("body", 2)
    assert str(error) == "body line 2: division by zero"
    assert isinstance(error, TidingsError) and error.status == 422


@pytest.mark.parametrize(
    "source",
    [
        "{{ user.nope() }}",
        "{{ user.first_name + 1 }}",
        "{{ user.attr.missing + 1 }}",
        "{{ user.first_name.format(1) }}",
        "{{ user.points | round('x') }}",
        "{% for x in 5 %}{% endfor %}",
        "{{ '%d' % 'x' }}",
        "{{ user.tags[10] }}{{ [1, 2] | sum(start='x') }}",
        "{{ range(1, 2, 0) }}",
    ],
)
def test_every_failure_becomes_a_render_error(context, source):
    with pytest.raises(RenderError):
        render(source, context)


def test_sms_body_is_capped_at_1600_characters(context):
    sms = compile_content({"body": "{{ 'x' * n }}"}, channel="sms")
    assert len(sms.render({**context, "n": SMS_MAX_LENGTH})["body"]) == SMS_MAX_LENGTH
    with pytest.raises(RenderError, match="longer than 1,600 characters") as caught:
        sms.render({**context, "n": SMS_MAX_LENGTH + 1})
    assert caught.value.path == "body"
    push = compile_content({"body": "{{ 'x' * 2000 }}"}, channel="push")
    assert len(push.render(context)["body"]) == 2000


def test_rendered_strings_are_capped_per_kind(context):
    loop = "{% for i in range(n) %}" + "y" * 100 + "{% endfor %}"
    assert len(render(loop, {"n": 100})) == MAX_TEXT_LENGTH
    with pytest.raises(RenderError, match="longer than 10,000 characters"):
        render(loop, {"n": 101})
    assert len(render(loop, {"n": 500}, kind="html")) == 50_000


EXPENSIVE = [
    '{{ "a" * 10**9 }}',
    '{{ ["a"] * 10**9 }}',
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}",
    "{{ 10 ** 100000 }}",
    "{% set x = 2 ** 4000 %}{{ x * x * x }}",
    '{{ "%999999999d" % 1 }}',
    '{{ "%*d" % (999999999, 1) }}',
    '{{ "%999999999d" | format(1) }}',
    '{{ "abc" | replace("a", "x" * 9000) | replace("x", "y" * 20) }}',
    '{{ "abc".replace("a", "x" * 9000).replace("x", "y" * 20) }}',
    '{% set a = "x" * 9000 %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}'
    "{% set e = d ~ d %}{{ e }}",
    '{% set a = "x" * 9000 %}{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}'
    "{% set e = d + d %}{{ e }}",
    '{% set a = ["x"] * 9000 %}{% set b = a + a %}{{ b | length }}',
    '{{ (["x" * 9000] * 9000) | join }}',
    '{{ "-".join(["x" * 9000] * 9000) }}',
    "{{ [[1] * 9000] * 9000 | sum(start=[]) }}",
    "{{ range(1000) | list | tojson(indent=100000) }}",
    "{% set x %}{% for i in range(1000) %}{{ 'y' * 9000 }}{% endfor %}{% endset %}{{ x | length }}",
    "{% set x %}{% for i in range(1000) %}{% for j in range(99) %}"
    + "L" * 5000
    + "{% endfor %}{% endfor %}{% endset %}{{ x | length }}",
    "{% filter upper %}{% for i in range(1000) %}{{ 'y' * 9000 }}{% endfor %}{% endfilter %}",
    "{% for i in range(1000) %}{% set s = range(1000) | map('string') | join %}{% endfor %}",
    # Shared references: tiny to build, astronomically long as text.
    '{% set a = ["x" * 9000] * 9000 %}{% set b = [a] * 9000 %}{{ b }}',
    '{% set a = ["x" * 900] * 90 %}{% set b = [a, a, a, a] %}{% set c = [b, b, b, b] %}'
    '{% set d = [c, c, c, c] %}{{ d ~ "" }}',
    '{% set a = ["x" * 900] * 90 %}{% set b = {"k": a, "j": a, "l": a} %}'
    "{% set c = (b, b, b, b) %}{% set d = (c, c, c, c) %}{{ d | tojson }}",
    '{% set a = ["x" * 900] * 90 %}{{ ([a] * 100) | join }}',
    '{% set a = ["x" * 900] * 90 %}{{ "%s" % ([a] * 100,) }}',
]


@pytest.mark.parametrize("source", EXPENSIVE)
def test_huge_outputs_and_runaway_loops_fail_fast(context, source):
    for kind in ("text", "html"):
        start = time.perf_counter()
        with pytest.raises(RenderError):
            render(source, context, kind=kind)
        assert time.perf_counter() - start < 2.0


# -- the sandbox -----------------------------------------------------------------------------

SSTI = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ user | attr('__class__') }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ self }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ request }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{{ '%s' % user }}",
    "{{ '%r' % user }}",
    "{{ '%s' % (user.get,) }}",
    "{{ '{0.__class__}'.format(user) }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(user) }}",
    "{{ '{0}'.format_map(user) }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ namespace.__init__.__globals__ }}",
    "{% import 'os' as os %}{{ os.popen('id').read() }}",
    "{% from 'os' import popen %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{{ x.__dict__ }}",
    "{{ user.__dict__ }}",
    "{{ user['__class__'] }}",
    "{{ user.attr.__class__.__init__ }}",
    "{{ range }}",
    "{{ range ~ '' }}",
    "{{ range.__globals__ }}",
    "{{ range.__call__.__globals__ }}",
    "{{ user.get }}",
    "{{ user.get ~ '' }}",
    "{{ user.get.__self__ }}",
    "{{ user.get | string }}",
    "{{ [user.get] | join }}",
    "{{ joiner }}{{ dict }}{{ dict.__base__ }}",
    "{{ loop }}",
    "{% for i in [1] %}{{ loop.__class__ }}{{ loop._iterator }}{% endfor %}",
    "{{ (1).__class__.__mro__ }}",
    "{{ user.attr | map(attribute='__class__') | list }}",
    "{{ user.tags | sort(attribute='__class__') }}",
    "{{ user.tags | map('upper') }}",
    "{{ user.tags | map('upper') ~ '' }}",
    "{{ user.tags | reverse ~ '' }}",
    "{{ user.prefs.items() ~ '' }}",
    "{{ user.first_name.__len__() }}",
    "{{ user.first_name.encode() }}",
    "{{ user.tags.append(1) }}{{ user.prefs.update({}) }}{{ user.prefs.pop('color') }}",
    "{% set ns = namespace() %}{% set ns.x = 1 %}",
    "{{ caller() }}{{ super() }}{{ varargs }}{{ kwargs }}",
    "{{ environment }}{{ context }}{{ __builtins__ }}{{ undefined }}",
]

LEAK_MARKERS = [
    "<class",
    "class '",
    "object at",
    "0x",
    "function",
    "method",
    "module",
    "builtin",
    "globals",
    "subclasses",
    "root:",
    "Template",
    "Undefined",
    "LoopContext",
    "generator",
    "__",
    "uid=",
]


@pytest.mark.parametrize("payload", SSTI)
@pytest.mark.parametrize("kind", ["text", "html"])
def test_template_injection_payloads_fail_or_render_harmlessly(context, payload, kind):
    try:
        output = render(payload, context, kind=kind)
    except (RenderError, InvalidTemplateError):
        return
    assert isinstance(output, str)
    for marker in LEAK_MARKERS:
        assert marker not in output, (payload, output)
    assert PHONE not in output


def test_data_cannot_be_mutated_by_a_template(context):
    before = json.dumps(context, sort_keys=True)
    for source in [
        "{{ user.tags.append(1) }}",
        "{{ user.prefs.update(a=1) }}",
        "{{ user.attr.clear() }}",
    ]:
        with pytest.raises(RenderError):
            render(source, context)
    render("{% set user = 1 %}{% set t = user %}{{ t }}", context)
    assert json.dumps(context, sort_keys=True) == before


def test_a_dict_key_wins_over_a_dict_method(context):
    ctx = build_context({}, {"items": ["x"], "values": 3, "get": "g"}, external_id="u")
    assert render("{{ user.attr.items }} {{ user.values }} {{ user.get }}", ctx) == '["x"] 3 g'
    assert render("{{ user.attr.keys() | list | length }}", ctx) == "3"
    plain = build_context({}, {"values": 3}, external_id="u")
    assert render("{{ user.attr.get('values') }}", plain) == "3"


# -- properties ------------------------------------------------------------------------------

TOKENS = [
    "{{", "}}", "{%", "%}", "{#", "#}", " ", "\n", "user", "attr", ".", "first_name", "tags",
    "points", "missing", "|", "default", "join", "upper", "replace", "list", "format", "string",
    "length", "(", ")", "[", "]", ",", "'x'", "'%s'", "'%99d'", "1", "0", "10", "9999", "*",
    "**", "+", "~", "%", "/", "range", "for", "in", "endfor", "if", "endif", "else", "set", "=",
    "loop", "index", "cycle", "get", "items", "__class__", "__globals__", "self", "not", "and",
    "is", "defined", "none", "true",
]  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=30), st.sampled_from(["text", "html"]))
def test_property_any_template_renders_text_or_raises_our_errors(tokens, kind):
    source = "".join(tokens)
    context = build_context(
        {"country": "US", "phone": PHONE},
        {"first_name": "Ann", "tags": ["a", "b"], "points": 7},
        external_id="u1",
    )
    try:
        output = render(source, context, kind=kind)
    except (RenderError, InvalidTemplateError):
        return
    assert isinstance(output, str)
    for marker in ("object at", "<class", "<function", "<built-in", "<generator", "Undefined"):
        assert marker not in output
    assert PHONE not in output


def test_problem_is_a_plain_value():
    problem = TemplateProblem("body", 3, "bad")
    assert problem == TemplateProblem("body", 3, "bad")
    assert TemplateProblem("", None, "bad").describe() == "content: bad"


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(list("ab {}%#<>&\"'\n\r\t-é{") + ["{{ ", "{%", "{#", " }}"]), max_size=40)
       .map("".join) | st.text(max_size=40), kind=st.sampled_from(["text", "html"]))
def test_text_without_template_syntax_skips_jinja_and_renders_the_same(text, kind):
    """The shortcut for plain strings gives exactly what Jinja gives (or Jinja's error)."""
    problems: list = []
    leaf = templates._compile_leaf(text, "body", kind, 1000, problems)
    if leaf is None:
        return
    assert (leaf.constant is not None) == ("\r" not in text and not any(d in text for d in ("{{", "{%", "{#")))
    context = {"user": {"id": "u1"}}
    try:
        expected = templates._Leaf(leaf.path, leaf.kind, leaf.limit, leaf.template).render(context)
    except templates.RenderError:
        assert leaf.constant is None
        return
    assert leaf.render(context) == expected


def test_constant_content_is_marked_and_renders_without_a_context():
    content = compile_content({"hooks": {"a": 1, "b": "plain"}, "list": ["x", {"y": True}]})
    assert content.constant
    assert content.render({}) == {"hooks": {"a": 1, "b": "plain"}, "list": ["x", {"y": True}]}
    assert not compile_content({"body": "Hi {{ user.first_name|default('you') }}"}).constant
