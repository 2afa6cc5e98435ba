"""`tidings demo`: a demo app with people, devices, events and segments to explore."""

from __future__ import annotations

import datetime as dt
import random

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns import hooks
from campaigns import service as campaigns
from segments import people, service
from tidings.config import current
from tidings.accounts import create_account
from tidings.apps import create_app_record
from tidings.models import Account, App, KeyKind

DEMO_APP = "Tidings demo shop"
DEMO_LOGIN = ("demo@tidings.local", "tidings-demo")
CITIES = [
    ("US", "NY", "New York", "America/New_York", 40.71, -74.0),
    ("US", "CA", "San Francisco", "America/Los_Angeles", 37.77, -122.42),
    ("GB", "ENG", "London", "Europe/London", 51.51, -0.13),
    ("FR", "IDF", "Paris", "Europe/Paris", 48.86, 2.35),
    ("DE", "BE", "Berlin", "Europe/Berlin", 52.52, 13.40),
    ("BR", "SP", "São Paulo", "America/Sao_Paulo", -23.55, -46.63),
    ("JP", "13", "Tokyo", "Asia/Tokyo", 35.68, 139.69),
]
SEGMENTS = [
    ("Gold members", 'attr.loyalty = "gold"', "Top loyalty tier"),
    ("Big spenders", 'did "purchase" where (amount > 100) in last 30d', "A purchase over 100 in 30 days"),
    ("Frequent buyers", 'did "purchase" >= 3 times in last 30d', ""),
    ("iOS on the new app", 'platform = "ios" and app_version >= "3.2"', ""),
    ("Near New York", "near(40.71, -74.0, 50km)", ""),
    ("Young women", 'attr.age between 20 and 30 and attr.gender = "f"', "The Artisan example"),
    ("Lapsed", "last_seen_at < 14d ago", "Not seen for two weeks"),
    ("Lapsed gold", 'segment("Gold members") and segment("Lapsed")', "Gold members we are losing"),
]


def load_demo(session: Session, users: int = 2000, seed: int = 7) -> dict:
    """Create (or refresh the keys of) the demo app; returns its id and fresh keys."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    app = session.scalar(sa.select(App).where(App.name == DEMO_APP))
    if app is not None:
        return {"app_id": app.id, "server_key": app.rotate_key(KeyKind.SERVER),
                "client_key": app.rotate_key(KeyKind.CLIENT), "created": False}
    app, server_key, client_key = create_app_record(session, DEMO_APP)
    changes, batch_events = [], []
    for i in range(users):
        country, region, city, tz, lat, lon = rng.choice(CITIES)
        platform = rng.choice(["ios", "android", "web"])
        external_id = f"demo-{i:05d}"
        changes.append((external_id, {
            "attributes": {
                "first_name": rng.choice(["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima", "Goro", "Hana"]),
                "age": rng.randint(16, 70), "gender": rng.choice(["f", "m", "x"]),
                "loyalty": rng.choices(["bronze", "silver", "gold"], [6, 3, 1])[0],
            },
            "language": {"US": "en", "GB": "en", "FR": "fr", "DE": "de", "BR": "pt-BR", "JP": "ja"}[country],
            "timezone": tz, "country": country, "region": region, "city": city,
            "lat": round(lat + rng.uniform(-0.3, 0.3), 4), "lon": round(lon + rng.uniform(-0.3, 0.3), 4),
            "phone": f"+1415555{i % 10000:04d}" if rng.random() < 0.6 else None,
            "sms_opt_in": rng.random() < 0.5, "push_opt_in": rng.random() < 0.8,
            "devices": [{
                "id": f"{external_id}-d1", "platform": platform,
                "device_type": "desktop" if platform == "web" else rng.choice(["phone", "phone", "tablet"]),
                "os_version": {"ios": rng.choice(["16.4", "17.2", "18.0"]),
                               "android": rng.choice(["12", "13", "14"]), "web": None}[platform],
                "app_version": rng.choice(["3.0.1", "3.1", "3.2.0", "3.10.0"]),
                "push_token": None if platform == "web" else f"demo-token-{i}",
            }],
        }))
        for _ in range(rng.randint(0, 12)):
            name = rng.choices(["app_open", "view_item", "add_to_cart", "purchase"], [8, 6, 3, 2])[0]
            props = {"amount": round(rng.uniform(5, 250), 2)} if name == "purchase" else {}
            batch_events.append({"user": external_id, "name": name, "properties": props,
                                 "time": now - dt.timedelta(minutes=rng.randint(1, 60 * 24 * 45))})
    for start in range(0, len(changes), 1000):
        people.upsert_users(session, app.id, changes[start:start + 1000], now)
    for start in range(0, len(batch_events), 1000):
        people.ingest_events(session, app.id, batch_events[start:start + 1000], now)
    for name, query, description in SEGMENTS:
        service.create_segment(session, app.id, name, query, description)
    load_campaigns(session, app.id)
    if session.scalar(sa.select(Account.id).where(Account.email == DEMO_LOGIN[0])) is None:
        create_account(session, DEMO_LOGIN[0], "admin", DEMO_LOGIN[1])
    return {"app_id": app.id, "server_key": server_key, "client_key": client_key, "created": True}


HOOKS = [
    ("discount_percent", "number", 0, "Checkout discount shown to this user"),
    ("home_banner", "string", "Welcome back!", "Text of the home screen banner"),
    ("new_checkout", "boolean", False, "Use the new checkout flow"),
]
CAMPAIGNS = [
    ({"name": "Welcome card", "channel": "inapp",
      "targets": [
          {"segment": 'segment("Gold members")', "control_percent": 10, "variants": [
              {"name": "Gold", "weight": 1, "content": {
                  "layout": "card", "title": "Hello {{ user.first_name }}, thanks for being Gold",
                  "body": "Free shipping all week.", "buttons": [{"label": "Shop", "action": "app://shop"}],
                  "expires_hours": 72}}]},
          {"segment": None, "control_percent": 10, "variants": [
              {"name": "A", "weight": 50, "content": {"layout": "banner", "title": "Hi {{ user.first_name }}!"}},
              {"name": "B", "weight": 50, "content": {"layout": "modal", "title": "New arrivals",
                                                      "body": "Take a look, {{ user.first_name }}."}}]}],
      "conversion": {"event": "purchase", "window_hours": 72}}, True),
    ({"name": "Discounts by tier", "channel": "config",
      "targets": [
          {"segment": 'segment("Lapsed gold")', "control_percent": 20, "variants": [
              {"name": "Ten", "weight": 1, "content": {"hooks": {"discount_percent": 10, "home_banner": "We miss you, {{ user.first_name }}"}}},
              {"name": "Twenty", "weight": 1, "content": {"hooks": {"discount_percent": 20}}}]},
          {"segment": 'segment("iOS on the new app")', "control_percent": 50, "variants": [
              {"name": "New checkout", "weight": 1, "content": {"hooks": {"new_checkout": True}}}]}],
      "conversion": {"event": "purchase", "window_hours": 168}}, True),
    ({"name": "Spring sale SMS", "channel": "sms", "audience": "sms_opt_in = true",
      "targets": [{"segment": 'segment("Big spenders")', "control_percent": 10, "variants": [
          {"name": "A", "weight": 50, "content": {"body": "{{ user.first_name | default('Hi') }}, 20% off for you today!"}},
          {"name": "B", "weight": 50, "content": {"body": "Spring sale: 20% off everything until Sunday."}}]}],
      "conversion": {"event": "purchase", "window_hours": 72},
      "schedule": {"type": "recurring", "cron": "0 10 * * 1"}, "local_time": True,
      "frequency_cap": {"max": 2, "per_hours": 24}}, False),
    ({"name": "Cart reminder push", "channel": "push",
      "targets": [{"segment": None, "control_percent": 10, "variants": [
          {"name": "A", "weight": 1, "content": {"title": "Still thinking?", "body": "Your cart is waiting, {{ user.first_name }}.",
                                                  "data": {"screen": "cart"}}}]}],
      "conversion": {"event": "purchase", "window_hours": 24},
      "schedule": {"type": "triggered", "event": "add_to_cart", "delay_minutes": 30}}, False),
]


def load_campaigns(session: Session, app_id: int) -> None:
    """Hooks, two running pulled campaigns, and SMS/push drafts (they need provider settings)."""
    for key, kind, default, description in HOOKS:
        hooks.create_hook(session, app_id, key, kind, default, description)
    for definition, launch in CAMPAIGNS:
        campaign = campaigns.create_campaign(session, app_id, definition)
        if launch:
            campaigns.launch(session, campaign, current())
