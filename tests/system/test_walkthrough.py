"""The README's walk-through, pasted as a reader would, against a real development server.

The blocks come from README.md (each after a ``<!-- walk-through block N`` marker) and run in
one bash: block 1, then ``read -r CODE`` (the test types the code the server printed, as the
reader sets ``CODE=``), then block 2. Every request there prints ``STATUS BODY``; each answer is
compared with the ``# -> STATUS JSON`` comment under its request: the status, the keys, fixed
values by value, and ``"…"`` (any string) or a bare ``…`` (any number) by type.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyotp
import pytest

from tests.support.processes import ServiceProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

# Starts the service as a process: run in one xdist worker, apart from the rest.
pytestmark = pytest.mark.xdist_group("processes")

README = Path(__file__).resolve().parents[2] / "README.md"
_MARKER = r"^<!-- {kind} block (\d+)\b"
_FENCE = re.compile(r"^```(\w*)\s*$")
_ANSWER = re.compile(r"^# -> (\d{3}) (.*)$")
_CONTINUATION = re.compile(r"^#\s{2,}(.*)$")


class _AnyString:
    def __repr__(self) -> str:
        return '"…"'


class _AnyNumber:
    def __repr__(self) -> str:
        return "…"


ANY_STRING = _AnyString()
ANY_NUMBER = _AnyNumber()
_PLACEHOLDERS = {"$any_string": ANY_STRING, "$any_number": ANY_NUMBER}


@dataclass(frozen=True)
class Expected:
    """One ``# -> STATUS JSON`` comment: what the request above it answers."""

    status: int
    body: Any
    comment: str


def walkthrough_blocks(readme: str, kind: str = "walk-through") -> list[str]:
    """The fenced bash block after each ``<!-- {kind} block N`` marker, in the markers' order
    (``kind``: "walk-through", the SMS one; "totp walk-through", the authenticator app's)."""
    marker_line = re.compile(_MARKER.format(kind=re.escape(kind)))
    lines = readme.splitlines()
    blocks: dict[int, str] = {}
    for index, line in enumerate(lines):
        marker = marker_line.match(line)
        if marker is None:
            continue
        start = index + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        opening = _FENCE.match(lines[start]) if start < len(lines) else None
        where = f"README.md:{index + 1}: a walk-through marker must be followed by a ```bash block"
        assert opening is not None, where
        assert opening.group(1) == "bash", where
        end = start + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        blocks[int(marker.group(1))] = "\n".join(lines[start + 1 : end]) + "\n"
    assert sorted(blocks) == list(range(1, len(blocks) + 1)), "walk-through blocks 1, 2, ..."
    return [blocks[number] for number in sorted(blocks)]


def _placeholders(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in _PLACEHOLDERS:
            return _PLACEHOLDERS[next(iter(value))]
        return {key: _placeholders(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_placeholders(item) for item in value]
    return value


def parse_expected(text: str) -> Any:
    """A comment's JSON, where ``"…"`` stands for any string and a bare ``…`` for any number."""
    marked = text.replace('"…"', '{"$any_string": 0}').replace("…", '{"$any_number": 0}')
    return _placeholders(json.loads(marked))


def expected_answers(block: str) -> list[Expected]:
    """Every ``# -> STATUS JSON`` comment of a block, continuation lines (``#`` and two or
    more spaces) joined."""
    answers: list[Expected] = []
    lines = block.splitlines()
    index = 0
    while index < len(lines):
        answer = _ANSWER.match(lines[index].strip())
        index += 1
        if answer is None:
            continue
        parts = [answer.group(2)]
        while index < len(lines) and (more := _CONTINUATION.match(lines[index].strip())):
            parts.append(more.group(1))
            index += 1
        comment = " ".join(parts)
        try:
            body = parse_expected(comment)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"README comment is not JSON ({exc}): {comment}") from None
        answers.append(Expected(int(answer.group(1)), body, comment))
    return answers


def differences(expected: Any, actual: Any, where: str = "body") -> list[str]:
    """How ``actual`` differs from the README's ``expected``: keys, types, fixed values."""
    if expected is ANY_STRING:
        return [] if isinstance(actual, str) else [f"{where}: a string expected, got {actual!r}"]
    if expected is ANY_NUMBER:
        number = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if number else [f"{where}: a number expected, got {actual!r}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: an object expected, got {actual!r}"]
        found = []
        if set(expected) != set(actual):
            found.append(
                f"{where}: keys differ: README {sorted(expected)}, server {sorted(actual)}"
            )
        for key in expected:
            if key in actual:
                found += differences(expected[key], actual[key], f"{where}.{key}")
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: {expected!r} expected, got {actual!r}"]
        return [
            problem
            for index, (item, got) in enumerate(zip(expected, actual, strict=True))
            for problem in differences(item, got, f"{where}[{index}]")
        ]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {expected!r} expected, got {actual!r}"]
    return []


@dataclass(frozen=True)
class Answer:
    """One ``STATUS BODY`` line the walk-through printed, and when it arrived."""

    status: int
    body: Any
    at: float


def _answer(line: str) -> Answer:
    status, _, body = line.rstrip("\n").partition(" ")
    assert status.isdigit(), f"not a 'STATUS BODY' line: {line!r}"
    return Answer(int(status), json.loads(body) if body.strip() else None, time.monotonic())


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@dataclass
class BashSession:
    """A bash running the walk-through: what it prints, line by line, and its input."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None]

    def answer(self) -> Answer:
        """The next ``STATUS BODY`` line (within 30 s)."""
        line = self.lines.get(timeout=30)
        assert line is not None, f"the walk-through stopped: {self.stderr()}"
        return _answer(line)

    def type(self, text: str, *, last: bool = False) -> None:
        """Type a line, as the reader sets a variable (``last``: nothing more will come)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{text}\n")
        self.process.stdin.flush()
        if last:
            self.process.stdin.close()

    def rest(self) -> list[Answer]:
        """Every answer until bash exits, which it must do cleanly."""
        answers = []
        while (line := self.lines.get(timeout=30)) is not None:
            answers.append(_answer(line))
        assert self.process.wait(timeout=30) == 0, self.stderr()
        return answers

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()


@contextlib.contextmanager
def bash_session(
    script: str, service: ServiceProcess, cwd: Path | None = None
) -> Iterator[BashSession]:
    """``script`` in ``bash -eu`` with ``BASE`` the service's URL; killed if left running."""
    bash = subprocess.Popen(
        ["bash", "-eu", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "BASE": service.url},
    )
    assert bash.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(bash.stdout, lines), daemon=True)
    pump.start()
    try:
        yield BashSession(bash, lines)
    finally:
        if bash.poll() is None:
            bash.kill()
            bash.wait()
        pump.join(timeout=5)
        for stream in (bash.stdin, bash.stdout, bash.stderr):
            if stream is not None:
                stream.close()


def run_walkthrough(service: ServiceProcess, blocks: list[str]) -> list[Answer]:
    """Block 1, the code the server printed as ``CODE``, block 2, in one bash session."""
    with bash_session(f"{blocks[0]}\nread -r CODE\n{blocks[1]}", service) as bash:
        created = bash.answer()
        code = service.next_code(created.body["challenge_id"])
        if code == "000000":
            pytest.skip("the code is the walk-through's wrong code (one in a million)")
        bash.type(code, last=True)
        return [created, *bash.rest()]


def assert_as_shown(expected: list[Expected], answers: list[Answer]) -> None:
    """Every answer is what the README's comment under its request shows."""
    assert len(answers) == len(expected), (
        f"the README shows {len(expected)} answers, the walk-through printed {len(answers)}"
    )
    problems = [
        f"answer {number} (README: {want.status} {want.comment}): {problem}"
        for number, (want, got) in enumerate(zip(expected, answers, strict=True), start=1)
        for problem in (
            [f"status {got.status}, not {want.status}"] if got.status != want.status else []
        )
        + differences(want.body, got.body)
    ]
    assert problems == []


def test_the_walkthrough_answers_what_the_readme_shows(dev_service: ServiceProcess) -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 2, "the walk-through is block 1, CODE=, block 2"
    expected = [answer for block in blocks for answer in expected_answers(block)]
    assert len(expected_answers(blocks[0])) == 1, "block 1 asks for one code"

    answers = run_walkthrough(dev_service, blocks)

    assert_as_shown(expected, answers)

    # What the README's prose says about those answers.
    created, wrong, approved, read, replayed = answers[:5]
    assert {read.body["challenge_id"], replayed.body["challenge_id"]} == {
        created.body["challenge_id"]
    }
    # The right code used the attempt it reserved: one less than after the wrong code.
    assert read.body["attempts_left"] == wrong.body["attempts_left"] - 1
    assert replayed.body["attempts_left"] == read.body["attempts_left"]
    # resend_after counts down from the first send: max(0, ceil(sent + min_interval - now)).
    waited = replayed.at - created.at
    countdown = max(0, math.ceil(created.body["resend_after"] - waited))
    assert abs(replayed.body["resend_after"] - countdown) <= 1
    assert approved.body["status"] == "approved"


def test_a_drifted_answer_is_reported() -> None:
    block = (
        'call "$BASE/x"\n'
        '# -> 200 {"challenge_id": "…", "status": "approved", "attempts_left": 3,\n'
        '#         "resend_after": …, "delivery": {"detail": null}}\n'
    )
    (want,) = expected_answers(block)
    assert want.status == 200
    same = {
        "challenge_id": "abc",
        "status": "approved",
        "attempts_left": 3,
        "resend_after": 12,
        "delivery": {"detail": None},
    }
    assert differences(want.body, same) == []
    drifted = {**same, "status": "pending", "attempts_left": "3", "extra": 1}
    del drifted["resend_after"]
    assert differences(want.body, drifted) == [
        "body: keys differ: README ['attempts_left', 'challenge_id', 'delivery', 'resend_after', "
        "'status'], server ['attempts_left', 'challenge_id', 'delivery', 'extra', 'status']",
        "body.status: 'approved' expected, got 'pending'",
        "body.attempts_left: 3 expected, got '3'",
    ]
    assert differences(want.body, {**same, "delivery": {"detail": "x"}}) == [
        "body.delivery.detail: None expected, got 'x'"
    ]


def run_totp_walkthrough(service: ServiceProcess, blocks: list[str], folder: Path) -> list[Answer]:
    """The authenticator-app blocks in one bash session, typing the codes the reader's app
    would show: the current one after block 1, the next one after block 2."""
    script = f"{blocks[0]}\nread -r CODE\n{blocks[1]}\nread -r CODE\n{blocks[2]}"
    with bash_session(script, service, cwd=folder) as bash:
        enrolled = bash.answer()
        app = pyotp.parse_uri(enrolled.body["otpauth_uri"])
        assert isinstance(app, pyotp.TOTP)
        first = app.now()
        bash.type(first)
        activated, replayed = bash.answer(), bash.answer()
        following = app.at(time.time() + app.interval)
        if "000000" in (first, following):
            pytest.skip("a code is the walk-through's wrong code (one in a million)")
        bash.type(following, last=True)
        return [enrolled, activated, replayed, *bash.rest()]


def test_the_authenticator_walkthrough_answers_what_the_readme_shows(
    dev_service: ServiceProcess, tmp_path: Path
) -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"), "totp walk-through")
    assert len(blocks) == 3, "enrol, CODE=, activate, CODE=, log in / lock / recover"
    expected = [answer for block in blocks for answer in expected_answers(block)]

    answers = run_totp_walkthrough(dev_service, blocks, tmp_path)

    assert_as_shown(expected, answers)
    # The saved QR code is the standalone SVG the README says a browser opens.
    svg = (tmp_path / "qr.svg").read_text(encoding="utf-8")
    assert svg.startswith("<?xml")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert answers[0].body["otpauth_uri"].startswith("otpauth://totp/otpservice:")
