"""CSAT survey messages (issue 19): asked once on the device after a support request is resolved.

Server → agent ``survey.ask`` names the request the way the person saw it (number, summary) and
who helped; agent → server ``survey.answer`` carries a score of 1 to 5 and an optional comment.
The server accepts one answer per request, only from the device the request came from.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from .messages import Id, Message, ShortStr

#: A comment is a sentence or a paragraph, not a document.
MAX_COMMENT = 1000
MAX_SUMMARY = 200

Score = Annotated[int, msgspec.Meta(ge=1, le=5)]
Comment = Annotated[str, msgspec.Meta(max_length=MAX_COMMENT)]


class SurveyAsk(Message, frozen=True, tag="survey.ask"):
    """Server → agent: ask the person how the resolved request ``number`` went."""

    sender: ClassVar[str] = "server"
    request_id: Id
    number: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    summary: Annotated[str, msgspec.Meta(max_length=MAX_SUMMARY)]
    technician: ShortStr = ""
    #: The OS user who asked for help (the request's requester): a root service with session helpers
    #: shows the survey in that user's graphical session only ("" from older servers: the person in front).
    requester: ShortStr = ""


class SurveyAnswer(Message, frozen=True, tag="survey.answer"):
    """Agent → server: the person's score (1 = very unhappy … 5 = very happy) and comment."""

    sender: ClassVar[str] = "agent"
    request_id: Id
    score: Score
    comment: Comment = ""
