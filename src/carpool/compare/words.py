"""How messages, tables and reports name a model's groups and its held-out scores.

carpool began with car-following models, whose groups are drivers and whose observations
are time series, so its words were "drivers", "each driver's series", "leave-future-out"
and "the next speed". A formula fit (:mod:`carpool.models.formula`) groups the rows of
any table by its first grouping factor: its words come from that factor (``county`` ->
"counties"; a name shorter than three letters or not a word, e.g. ``g``, is called "group")
and from the table's rows, which need not be in time order. Its leave-future-out score
holds out the last rows of each group *in the table's order*: a forecast where the rows
are in time order within each group, else a within-group held-out score (the rows of a
regression with independent residuals are exchangeable within a group, so holding out
the last ones is a fair held-out sample unless the table is sorted by a predictor within
groups). It is named "leave-last-rows-out" there so that nobody reads a forecast into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Words", "plural", "words_for"]


def plural(word: str) -> str:
    """English plural of a group word: county -> counties, class -> classes, school ->
    schools."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


@dataclass(frozen=True)
class Words:
    """The words of one model.

    Attributes
    ----------
    group, groups
        A group and groups in running text (``"driver"``, ``"drivers"``; ``"county"``,
        ``"counties"``).
    series
        What a group's observations are: ``"series"`` (in time order) or ``"rows"``.
    lfo
        The name of the leave-future-out score (``"leave-future-out"``, or
        ``"leave-last-rows-out"`` where rows need not be in time order).
    ldo
        The name of the leave-groups-out score (``"leave-drivers-out"``,
        ``"leave-counties-out"``).
    new_groups, new_group
        What a leave-groups-out refit predicts, in the report's note on the unpooled mode.
    response
        The observation: ``"y (next speed, m/s, for car-following models)"``, or the
        formula's response.
    formula
        The formula of a formula fit, else ``""``.
    """

    group: str = "group"
    groups: str = "groups"
    series: str = "series"
    lfo: str = "leave-future-out"
    ldo: str = "leave-drivers-out"
    new_groups: str = "drivers (groups)"
    new_group: str = "driver"
    response: str = "y (next speed, m/s, for car-following models)"
    formula: str = ""

    def lfo_said(self, fraction: float = 0.2) -> str:
        """What the leave-future-out score holds out, in one phrase."""
        if self.series == "series":
            return f"the last {fraction:.0%} of each {self.group}'s series"
        return (f"the last {fraction:.0%} of each {self.group}'s rows in the table's order "
                f"(a forecast where the rows are in time order within each {self.group})")


def _group_word(name: str) -> str:
    """A group dimension's name as a word of running text (``g`` -> ``group``)."""
    return name if len(name) >= 3 and name.isalpha() else "group"


def words_for(spec: Any) -> Words:
    """The words of ``spec``'s fits (see the module docstring). Registered models keep
    carpool's words (their group dimension plus ``s``; series; leave-future-out)."""
    if getattr(spec, "name", None) != "formula":
        g = spec.group_dim
        return Words(group=g, groups=f"{g}s")
    group = _group_word(spec.group_dim)
    groups = plural(group)
    formula = str(spec.options.get("formula", ""))
    response = formula.split("~", 1)[0].strip() or "y"
    return Words(group=group, groups=groups, series="rows", lfo="leave-last-rows-out",
                 ldo=f"leave-{groups}-out", new_groups=groups, new_group=group,
                 response=response, formula=formula)
