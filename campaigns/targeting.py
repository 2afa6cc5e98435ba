"""Who gets what: a campaign's audience and targets compiled once, for SQL fan-out and for one person.

Both paths give the same answer: the first target whose segment matches wins (SQL: a CASE over
the compiled target conditions; memory: the compiled predicates in order), and the arm inside
the target comes from the deterministic `Splitter` keyed by the user's external id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from campaigns.assignment import Splitter
from campaigns.models import Campaign
from campaigns.templates import CompiledContent, compile_content
from segments.query import Profile, compile_predicate, referenced_event_names
from segments.query.sql import user_condition
from segments.service import compile_query


@dataclasses.dataclass(frozen=True)
class Arm:
    """The target (0-based) and arm a user is in; `variant` is None for control."""

    target_index: int
    control: bool
    variant: str | None
    variant_index: int | None


class CompiledCampaign:
    """A campaign's queries, splits and templates, parsed once."""

    def __init__(self, session: Session, campaign: Campaign):
        spec = campaign.spec
        self.campaign = campaign
        self.campaign_id = campaign.id
        self.app_id = campaign.app_id
        audience = spec.get("audience")
        self.audience = compile_query(session, campaign.app_id, audience) if audience else None
        self.targets = [
            compile_query(session, campaign.app_id, t["segment"]) if t.get("segment") else None
            for t in spec["targets"]
        ]
        self.splitters = [Splitter.from_target(campaign.id, t) for t in spec["targets"]]
        self.contents: list[dict[str, CompiledContent]] = [
            {v["name"]: compile_content(v["content"], channel=campaign.channel) for v in t["variants"]}
            for t in spec["targets"]
        ]
        self.event_names = set()
        for node in [self.audience, *self.targets]:
            if node is not None:
                self.event_names |= referenced_event_names(node)

    def nodes(self) -> list:
        return [n for n in [self.audience, *self.targets] if n is not None]

    # -- one person ---------------------------------------------------------------------

    def arm_for(self, profile: Profile, external_id: str, now: dt.datetime) -> Arm | None:
        """The arm for this person, or None when they are outside the audience or every target."""
        if self.audience is not None and not compile_predicate(self.audience, now)(profile):
            return None
        for index, node in enumerate(self.targets):
            if node is None or compile_predicate(node, now)(profile):
                return self.split(index, external_id)
        return None

    def split(self, target_index: int, external_id: str) -> Arm:
        a = self.splitters[target_index].assign(external_id)
        return Arm(target_index, a.control, a.variant, a.variant_index)

    # -- the whole audience ---------------------------------------------------------------

    def sql(self, now: dt.datetime, dialect: str) -> tuple[sa.ColumnElement[bool], sa.ColumnElement[int]]:
        """(condition, target index) over the users table: who is in, and which target wins."""
        def cond(node):
            return user_condition(node, app_id=self.app_id, now=now, dialect=dialect)

        whens, conds = [], []
        for index, node in enumerate(self.targets):
            c = sa.true() if node is None else cond(node)
            whens.append((c, index))
            conds.append(c)
        in_targets = sa.or_(*conds)
        condition = in_targets if self.audience is None else sa.and_(cond(self.audience), in_targets)
        return condition, sa.case(*whens, else_=sa.null())


def compile_campaign(session: Session, campaign: Campaign) -> CompiledCampaign:
    return CompiledCampaign(session, campaign)


def event_names_of(compiled: Sequence[CompiledCampaign]) -> set[str]:
    names: set[str] = set()
    for c in compiled:
        names |= c.event_names
    return names
