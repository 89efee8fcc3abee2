"""The volunteer's link to one visit, and the visit's short code.

A visit link is a :mod:`volunteers.links` link of purpose ``visit``: it names the visit and, in
the link's second field (the case of an offer link), the volunteer it was sent to. So a link
acts on its own visit only, and stops working for its volunteer once the visit is handed back
or reassigned to someone else. It is signed and expires like every volunteer link.
"""

from __future__ import annotations

from dataclasses import dataclass

from volunteers.links import LinkError, link_url, read_token

PURPOSE = "visit"


@dataclass(frozen=True, slots=True)
class VisitClaim:
    visit_id: int
    volunteer_id: int


def visit_code(visit_id: int) -> str:
    """The short code a volunteer quotes on the phone (探访V123): only the visit's number."""
    return f"V{visit_id}"


def visit_link(visit_id: int, volunteer_id: int) -> str:
    """The signed page address for ``volunteer_id``'s visit ``visit_id``."""
    return link_url(PURPOSE, visit_id, volunteer_id)


def read_visit_token(token: str, *, max_age_s: int) -> VisitClaim:
    """The visit and volunteer a token names; :class:`LinkError` if forged, altered or old."""
    claim = read_token(PURPOSE, token, max_age_s=max_age_s)
    if claim.case_id is None:  # signed by us, but not as a visit link is made
        raise LinkError("invalid")
    return VisitClaim(claim.object_id, claim.case_id)
