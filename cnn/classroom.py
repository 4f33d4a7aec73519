"""The teacher and the class: who is the teacher on a class server, and what the class's students may do.

Plain logic with no Streamlit import: pages pass in the server's address, the token and the query string.
The class's settings live in runs/classroom.json, so every session (and replicas sharing runs/) sees the same.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import quote

from .checkpoint import run_name_problem
from .config import PRESETS, TrainConfig
from .storage import atomic_write

LOG = logging.getLogger(__name__)

TOKEN_VARIABLE = "CNN_TEACHER_TOKEN"
TEACHER_PARAMETER = "teacher"  # ?teacher=TOKEN in the link the teacher opens
MIN_TOKEN_LENGTH = 12  # a chosen token shorter than this could be guessed by trying
MAX_TOKEN_LENGTH = 200
CLASS_SETTINGS_FILE = "classroom.json"
MAX_SETTINGS_BYTES = 64 * 1024  # a real file is ~200 bytes; a larger one is not ours
TRAINING_CHOICES = ("limited", "any", "none")  # what students may start
BUNDLED = "bundled"
# The fields that make a preset what it is: a student may change epochs (up to the cap), seed, batch size,
# learning rate and the keep-probabilities, but a run that claims "fast" with ARTICLE's optimizer is not FAST.
PRESET_DEFINING_FIELDS = ("architecture", "optimizer", "schedule", "init", "init_std", "label_smoothing",
                          "rmsprop_decay", "rmsprop_epsilon", "eval_every", "eval_subset")
PRESET_WORDS = {"article": "ARTICLE", "fast": "FAST", "softmax": "the softmax baseline"}
TEACHER_CLEARED = "Dropped from the queue: the teacher cleared the queue."
TEACHER_STOPPED = "Stopped by the teacher."


# ---------------------------------------------------------------- the teacher role

def is_loopback(address: str | None) -> bool:
    """Whether a server.address keeps the server to this machine (127.x, ::1, localhost); "" or None is all."""
    if not address:
        return False  # Streamlit's default listens on every interface
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or an interface's address: reachable from the network


def is_class_server(address: str | None, token: str | None) -> bool:
    """A class server has a teacher token, or listens beyond loopback (students connect to it)."""
    return bool(token) or not is_loopback(address)


def token_problem(token: str) -> str:
    """Why a chosen CNN_TEACHER_TOKEN cannot be used ("" when it can)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"{TOKEN_VARIABLE} must be at least {MIN_TOKEN_LENGTH} characters long (a short one can be guessed)."
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        return f"{TOKEN_VARIABLE} must be at most {MAX_TOKEN_LENGTH} printable characters without spaces."
    return ""


def new_token() -> str:
    """A token for a class server whose teacher set none: 32 random URL-safe characters."""
    return secrets.token_urlsafe(24)


def token_matches(offered: object, token: str | None) -> bool:
    """Whether the token offered in the link is the teacher's (in constant time; anything odd is False)."""
    if not token or not isinstance(offered, str) or not offered or len(offered) > MAX_TOKEN_LENGTH:
        return False
    return hmac.compare_digest(offered.encode("utf-8", "replace"), token.encode("utf-8"))


def link_host(address: str | None) -> str:
    """The host to put in the teacher link: the address the server listens on, else this machine's name."""
    if address and address.strip() not in ("0.0.0.0", "::", "[::]") and not is_loopback(address):
        return address.strip()
    if address and is_loopback(address):
        return "localhost"
    return socket.gethostname() or "localhost"


def teacher_link(host: str, port: int, token: str) -> str:
    """http://HOST:PORT/?teacher=TOKEN (an IPv6 address in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(port)}/?{TEACHER_PARAMETER}={quote(token, safe='')}"


def teacher_link_sentence(link: str) -> str:
    """What the server prints once at start when it made the token itself."""
    return (f"This is a class server: the teacher opens {link} to be the teacher (set {TOKEN_VARIABLE} to choose "
            "the token; keep it off the projector).")


# ---------------------------------------------------------------- the class's settings

@dataclass(frozen=True)
class ClassSettings:
    """What the teacher chose for the class; stored in runs/classroom.json."""

    student_training: str = "limited"  # "limited": allowed_presets up to max_epochs; "any": the server's caps; "none"
    allowed_presets: tuple[str, ...] = ("fast", "softmax")  # presets a student may start when "limited"
    max_epochs: int = 2  # epochs a student's run may have when "limited"
    class_model: str = BUNDLED  # the run every session uses until it picks its own ("bundled": the bundled model)

    def problem(self) -> str:
        """Why these settings cannot be used, as a sentence ("" when they can)."""
        if self.student_training not in TRAINING_CHOICES:
            return f"student_training must be one of {', '.join(TRAINING_CHOICES)}."
        presets = self.allowed_presets
        if not isinstance(presets, tuple) or not presets or any(p not in PRESETS for p in presets):
            return f"allowed_presets must name at least one of {', '.join(PRESETS)}."
        if isinstance(self.max_epochs, bool) or not isinstance(self.max_epochs, int) or not 1 <= self.max_epochs <= 1000:
            return "max_epochs must be a whole number from 1 to 1,000."
        if not isinstance(self.class_model, str) or (self.class_model != BUNDLED and run_name_problem(self.class_model)):
            return "class_model must be 'bundled' or a run's name."
        return ""

    def to_dict(self) -> dict:
        values = asdict(self)
        values["allowed_presets"] = list(self.allowed_presets)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "ClassSettings":
        """Settings from a JSON object; ValueError with a sentence for unknown keys or values that do not fit."""
        if not isinstance(values, dict) or set(values) - {f.name for f in fields(cls)}:
            raise ValueError("the file holds keys this app does not know.")
        values = dict(values)
        if isinstance(values.get("allowed_presets"), list):
            values["allowed_presets"] = tuple(values["allowed_presets"])
        settings = cls(**values)
        if settings.problem():
            raise ValueError(settings.problem())
        return settings


def class_settings_path(runs_dir: Path | str) -> Path:
    return Path(runs_dir) / CLASS_SETTINGS_FILE


def read_class_settings(runs_dir: Path | str) -> ClassSettings:
    """The class's settings; the defaults when there is no file, or (with a logged sentence) a file that is not right."""
    path = class_settings_path(runs_dir)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_SETTINGS_BYTES + 1)
    except FileNotFoundError:
        return ClassSettings()
    except OSError:
        LOG.warning("The class settings file could not be read; the defaults are used.")
        return ClassSettings()
    try:
        if len(raw) > MAX_SETTINGS_BYTES:
            raise ValueError("the file is too large to be ours.")
        return ClassSettings.from_dict(json.loads(raw.decode("utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc) if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError) else (
            "it is not the JSON this app writes.")
        LOG.warning("The class settings in %s cannot be used (%s); the defaults are used until the teacher saves "
                    "new ones.", CLASS_SETTINGS_FILE, reason)
        return ClassSettings()


def write_class_settings(runs_dir: Path | str, settings: ClassSettings) -> None:
    """Save the class's settings atomically (every session reads them); ValueError for settings that do not fit."""
    if settings.problem():
        raise ValueError(settings.problem())
    data = json.dumps(settings.to_dict(), indent=2).encode()
    atomic_write(class_settings_path(runs_dir), lambda stream: stream.write(data))


def preset_words(names) -> str:
    """("fast", "softmax") -> "FAST or the softmax baseline"."""
    words = [PRESET_WORDS.get(name, name) for name in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def student_refusal(config: TrainConfig, settings: ClassSettings) -> str | None:
    """None when a student may start config under the class's settings, else the sentence saying what they may start.

    Checked on the server: the preset's name, the fields that define it (a forged "fast" with ARTICLE's optimizer
    is refused) and the epochs.
    """
    if settings.student_training == "any":
        return None
    if settings.student_training == "none":
        return "On this class server only the teacher starts trainings today: ask your teacher."
    allowed = (f"On this class server students may start {preset_words(settings.allowed_presets)}, at most "
               f"{settings.max_epochs} epoch{'s' if settings.max_epochs != 1 else ''}: ask your teacher for more.")
    base = PRESETS.get(config.name) if isinstance(config.name, str) else None
    if base is None or config.name not in settings.allowed_presets:
        return allowed
    if any(getattr(config, name) != getattr(base, name) for name in PRESET_DEFINING_FIELDS):
        return allowed
    if not isinstance(config.epochs, int) or config.epochs > settings.max_epochs:
        return allowed
    return None
