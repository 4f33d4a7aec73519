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

from .checkpoint import BUNDLED_MODELS, run_name_problem
from .config import PRESETS, TrainConfig, presets_for
from .model import NETWORKS
from .storage import atomic_write
from .views import ACTIVE_STATES, accuracy_text, config_model, dataset_title, network_title, plural

LOG = logging.getLogger(__name__)

TOKEN_VARIABLE = "CNN_TEACHER_TOKEN"
TEACHER_PARAMETER = "teacher"  # ?teacher=TOKEN in the link the teacher opens
MIN_TOKEN_LENGTH = 12  # a chosen token shorter than this could be guessed by trying
MAX_TOKEN_LENGTH = 200
CLASS_SETTINGS_FILE = "classroom.json"
MAX_SETTINGS_BYTES = 64 * 1024  # a real file is ~200 bytes; a larger one is not ours
TRAINING_CHOICES = ("limited", "any", "none")  # what students may start
BUNDLED = "bundled"
# The fields that make a preset's recipe what it is: a student may change epochs (up to the cap), seed, batch size,
# learning rate and the keep-probabilities, but a run that claims "fast" with ARTICLE's optimizer is not FAST.
# The network and the dataset are not among them: a class's rule is about the recipe and the epochs, and FAST
# trains an MLP as well as the article's CNN. (The softmax preset's all-zero start on a network with hidden layers
# is refused for everyone by TrainConfig.problem().)
PRESET_DEFINING_FIELDS = ("optimizer", "schedule", "init", "init_std", "label_smoothing",
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


# A reverse proxy on the same machine makes every student look like loopback: a request it forwarded carries one
# of these, so the server counts as a class server even when bound to 127.0.0.1 (nginx, Caddy, Apache set them).
PROXY_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded", "x-forwarded-host")


def forwarded(headers) -> bool:
    """Whether a request's headers (any mapping) say a reverse proxy passed it on."""
    try:
        names = {str(name).lower() for name in headers.keys()}
    except Exception:  # an odd header object: in doubt, treat it as forwarded (the safe side: a student)
        return True
    return any(name in names for name in PROXY_HEADERS)


def proxied_client(headers) -> str:
    """The client's address as the proxy in front of the app saw it, for a request forwarded(headers) says came
    through one: the LAST address in X-Forwarded-For, which that proxy appended (any before it are the client's
    own, forgeable). "behind a proxy" when the headers name none (one "computer" for every such client: the safe
    side of a per-computer cap); at most 64 characters."""
    try:
        every = headers.get_all("X-Forwarded-For") if hasattr(headers, "get_all") else [headers.get("X-Forwarded-For")]
        every = [value for value in every if isinstance(value, str)]
    except Exception:  # an odd header object: one "computer" for all, as with no header
        every = []
    return ",".join(every).split(",")[-1].strip()[:64] or "behind a proxy"


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
    return (f"This is a class server: the teacher opens {link} to be the teacher (behind a reverse proxy: the "
            f"students' address with the same ?{TEACHER_PARAMETER}=...; set {TOKEN_VARIABLE} to choose the token; "
            "keep it off the projector).")


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
        epochs = self.max_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 1000:
            return "max_epochs must be a whole number from 1 to 1,000."
        model = self.class_model
        if not isinstance(model, str) or (model not in BUNDLED_MODELS and run_name_problem(model)):
            return f"class_model must be a bundled model ({', '.join(BUNDLED_MODELS)}) or a run's name."
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


def settings_stamp(runs_dir: Path | str) -> tuple[int, int, int] | None:
    """(inode, modification time in ns, size) of the class's settings file, None while there is none: a page
    compares it between its runs to see that the teacher saved new settings, on any replica, without reading them."""
    try:
        found = class_settings_path(runs_dir).stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def read_class_settings(runs_dir: Path | str) -> ClassSettings:
    """The class's settings: the defaults when there is no file, or (with a logged sentence) one that is not right."""
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


def class_rules_sentence(settings: ClassSettings) -> str | None:
    """What students may start, as the Train form says it; None when they may start anything within the caps."""
    if settings.student_training == "any":
        return None
    if settings.student_training == "none":
        return "On this class server only the teacher starts trainings today: ask your teacher."
    epochs = settings.max_epochs
    return (f"On this class server students may start {preset_words(settings.allowed_presets)}, at most "
            f"{plural(epochs, 'epoch')}: ask your teacher for more.")


def student_presets(settings: ClassSettings) -> tuple[str, ...]:
    """The presets a student's Train form may offer, in PRESETS order (none when students may not train)."""
    if settings.student_training == "none":
        return ()
    allowed = PRESETS if settings.student_training == "any" else settings.allowed_presets
    return tuple(name for name in PRESETS if name in allowed)


def network_presets(network: str, presets: tuple[str, ...]) -> tuple[str, ...]:
    """The presets of presets (what this session may start) that can train network, its default first."""
    return tuple(name for name in presets_for(network) if name in presets)


def trainable_networks(presets: tuple[str, ...]) -> tuple[str, ...]:
    """The networks, in NETWORKS order, that some preset of presets can train (a class that allows only the
    softmax preset offers only softmax regression)."""
    return tuple(name for name in NETWORKS if network_presets(name, presets))


def student_max_epochs(settings: ClassSettings) -> int | None:
    """The most epochs a student's run may have (None: only the server's step cap applies)."""
    return settings.max_epochs if settings.student_training == "limited" else None


def student_refusal(config: TrainConfig, settings: ClassSettings) -> str | None:
    """None when a student may start config under the class's settings, else the sentence saying what they may start.

    Checked on the server: the preset's name, the fields that define its recipe (a forged "fast" with ARTICLE's
    optimizer is refused) and the epochs. Any network and dataset may be trained with an allowed recipe.
    """
    rules = class_rules_sentence(settings)
    if rules is None or settings.student_training == "none":
        return rules
    base = PRESETS.get(config.name) if isinstance(config.name, str) else None
    if base is None or config.name not in settings.allowed_presets:
        return rules
    if any(getattr(config, name) != getattr(base, name) for name in PRESET_DEFINING_FIELDS):
        return rules
    if not isinstance(config.epochs, int) or config.epochs > settings.max_epochs:
        return rules
    return None


# ---------------------------------------------------------------- the Teacher page's contents

TRAINING_LABELS = {
    "limited": "The presets ticked here, up to the epochs below",
    "any": "Anything within the server's limits",
    "none": "No training: only the teacher starts runs",
}


def run_actions(status: str) -> tuple[str, ...]:
    """The teacher's buttons for a run in this status."""
    return {"running": ("Pause", "Stop"), "paused": ("Resume", "Stop"), "queued": ("Stop",)}.get(status, ())


def run_rows(jobs: list[dict], me: str | None = None) -> tuple[list[dict], list[dict]]:
    """(active, ended): the job views the Teacher page lists, each with who started it ("session 3f2a", "the
    teacher" for another teacher's session, or "you" for the session tag me).

    active: queued, running and paused runs, oldest first (the queue's order), with the buttons each one gets;
    ended: {"run", "network", "dataset", "started by", "status", "accuracy", "note"} rows of text, newest first.
    """
    def by(job: dict) -> str:
        return "you" if me is not None and job.get("session", job["started_by"]) == me else job["started_by"]

    def trained(job: dict) -> dict:
        network, dataset = config_model(job.get("config"))
        return {"network": network_title(network), "dataset": dataset_title(dataset)}

    active = [dict(job, actions=run_actions(job["status"]), started_by=by(job))
              for job in sorted(jobs, key=lambda job: job["id"]) if job["status"] in ACTIVE_STATES]
    ended = [{"run": job["name"], **trained(job), "started by": by(job), "status": job["status"],
              "accuracy": accuracy_text(job["test_accuracy"], job["status"]), "note": job["error"] or ""}
             for job in sorted(jobs, key=lambda job: job["id"], reverse=True) if job["status"] not in ACTIVE_STATES]
    return active, ended



def class_model_choices(runs) -> list[str]:
    """"bundled" first, then the other bundled models listed (Fashion-MNIST's), then every run on disk with a
    model and a card that ended (finished or stopped), of any dataset."""
    usable = [run for run in runs if run.name != BUNDLED and run.checkpoint is not None and run.card is not None
              and run.status in ("finished", "stopped")]
    return ([BUNDLED] + [run.name for run in usable if run.name in BUNDLED_MODELS]
            + [run.name for run in usable if run.name not in BUNDLED_MODELS])


def settings_from_form(current: ClassSettings, training: object, presets: object, max_epochs: object,
                       class_model: object | None = None) -> ClassSettings:
    """The settings the teacher's form asks for; ValueError with a sentence for a value that does not fit.

    Checked here, not trusted from the widgets: a browser can send any value.
    """
    if isinstance(max_epochs, float) and max_epochs.is_integer():
        max_epochs = int(max_epochs)  # number_input sends whole numbers as floats
    presets = tuple(presets) if isinstance(presets, (list, tuple)) else presets
    settings = ClassSettings(student_training=training, allowed_presets=presets, max_epochs=max_epochs,
                             class_model=current.class_model if class_model is None else class_model)
    if settings.problem():
        raise ValueError(f"These settings cannot be saved: {settings.problem()}")
    return settings
