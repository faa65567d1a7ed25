"""Shared machinery of the exercise checkers: reporting, calling the learner's code, recognising known mistakes.

Every checker follows the same pattern:

1. :func:`require_callable` — a ``TypeError`` if it was given something that is not a function (typically the
   *result* of calling it: ``check_x(x(logits))`` instead of ``check_x(x)``).
2. :func:`run_cases` — calls the learner's function on several fixed, seeded inputs (through
   :func:`call_learner`, which turns ``NotImplementedError`` into "✘ `fn` is not implemented yet — <hint>" and
   any other exception into a failure naming the exception and the shapes it was called with) and compares each
   result with the reference implementation.
3. When a result differs, :func:`find_mistakes` searches a grid of *known wrong variants* — every combination of
   up to two typical mistakes — for one that reproduces the learner's numbers, and the failure message explains
   exactly those mistakes and how to fix them. Only when nothing matches does a checker fall back to a generic
   "expected … got …" message.
4. :func:`passed` prints "✔ <message>" and returns ``True``; :func:`fail` prints "✘ <diagnosis>" and raises
   :class:`CheckFailed`. The :func:`checker` decorator decides what the learner gets: by default the check
   *reports* — the ✘ diagnosis, and ``False`` — so that "Run all" goes on past an exercise the learner skipped;
   with ``KD_COURSE_STRICT_CHECKS=1`` (set for the test suite, see ``solutions/conftest.py``, and for grading)
   ``CheckFailed`` propagates, and IPython shows the diagnosis alone (:meth:`CheckFailed._render_traceback_`).
5. :func:`yours_or_reference` is how a notebook picks the implementation its later cells (training runs above all)
   use: the learner's when it passes its checker, otherwise the course's reference, saying so in one line — so a
   learner who skips an exercise can still run the rest of the notebook.

The helpers are public within the package so that every notebook's checkers share them.
"""
from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch

__all__ = [
    "CheckFailed",
    "STRICT_ENV",
    "strict_checks",
    "checker",
    "yours_or_reference",
    "single_thread",
    "passed",
    "fail",
    "fn_name",
    "require_callable",
    "describe",
    "describe_args",
    "call_learner",
    "as_tensor_output",
    "close",
    "seeded_randn",
    "fmt",
    "Case",
    "Dimensions",
    "mistake_variants",
    "run_cases",
    "find_mistakes",
    "mistakes_message",
]

Case = Mapping[str, Any]
"""The arguments of one call of the learner's function, by name, in positional order."""

Dimensions = Mapping[str, Sequence[tuple[Any, str]]]
"""Mistake grid: for each aspect of an implementation, its options as ``(value, diagnosis)``. The *first* option
of every aspect is the correct one (its diagnosis is ignored); the others are typical mistakes."""

RTOL = 1e-4
ATOL = 1e-6
_MAX_ERROR_TEXT = 300


class CheckFailed(AssertionError):
    """Raised by a checker when the learner's function is wrong; the message is the diagnosis.

    In Jupyter the diagnosis, already printed as "✘ …", is all the learner sees: IPython shows what
    ``_render_traceback_`` returns instead of a traceback through the checker's internals. When the learner's own
    code raised, its frames (and only those) are shown too, pointing at the faulty line.
    """

    def _render_traceback_(self) -> list[str]:
        cause = self.__cause__
        if cause is None or cause.__traceback__ is None:
            return []
        frames = [f for f in traceback.extract_tb(cause.__traceback__) if _is_learner_file(f.filename)]
        if not frames:
            return []
        return ["Your code raised it here:", *(line.rstrip("\n") for line in traceback.format_list(frames)),
                f"{type(cause).__name__}: {cause}"]


_LIBRARY_DIRS = (str(Path(__file__).resolve().parent.parent), str(Path(torch.__file__).resolve().parent.parent))


def _is_learner_file(filename: str) -> bool:
    """A notebook cell or the learner's own file, not course_utils or an installed library."""
    path = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    return not path.startswith(_LIBRARY_DIRS) and "site-packages" not in path


_F = TypeVar("_F", bound=Callable[..., bool])
_T = TypeVar("_T")

STRICT_ENV = "KD_COURSE_STRICT_CHECKS"
"""Environment variable: ``1`` makes a failed check raise :class:`CheckFailed` instead of returning ``False``."""


def strict_checks() -> bool:
    """Whether a failed check raises (``KD_COURSE_STRICT_CHECKS=1``: the test suite, grading) or only reports."""
    value = os.environ.get(STRICT_ENV, "0").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"{STRICT_ENV}={value!r}: use 1 (a failed check raises) or 0 (it prints ✘ and returns False)")
    return value == "1"


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, then restore the previous setting.

    Checkers evaluate hundreds of tiny tensor operations; on a busy machine torch's thread pool makes each of them
    take milliseconds instead of microseconds (waking up workers for a 4 × 7 softmax), one thread does not.
    """
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


def checker(func: _F | None = None, *, one_thread: bool = True) -> Any:
    """Decorator for every ``check_*``: runs it under :func:`single_thread` (unless ``one_thread=False``: a check
    that sets the thread count itself); a failure returns ``False`` after its ✘ diagnosis, or raises
    :class:`CheckFailed` when :func:`strict_checks` is on."""

    def decorate(check: _F) -> _F:
        @functools.wraps(check)
        def wrapper(*args: Any, **kwargs: Any) -> bool:
            try:
                with single_thread() if one_thread else contextlib.nullcontext():
                    return check(*args, **kwargs)
            except CheckFailed:
                if strict_checks():
                    raise
                return False

        return wrapper  # type: ignore[return-value]

    return decorate if func is None else decorate(func)


def yours_or_reference(yours: _T, reference: _T, *, check: Callable[..., bool]) -> _T:
    """The learner's implementation if it passes ``check``, else ``reference`` — with one line saying which.

    Args:
        yours: the learner's function or class; a tuple when the checker takes several (they are passed as
            separate arguments, and a tuple of the same length is returned).
        reference: the course's implementation with the same signature(s), used when ``yours`` fails its check.
        check: the exercise's ``check_*`` function. It runs again here, quietly, so that an edit made after the
            check cell ran is checked too.

    Raises:
        CheckFailed: ``yours`` failed and :func:`strict_checks` is on (the test suite must not train silently
            with the reference).
    """
    if not callable(check):
        raise TypeError(f"check= must be the exercise's check_* function, got {describe(check)}")
    items = yours if isinstance(yours, tuple) else (yours,)
    if isinstance(yours, tuple) != isinstance(reference, tuple) or len(items) != len(
            reference if isinstance(reference, tuple) else (reference,)):
        raise TypeError("yours and reference must match: both a single implementation, or tuples of the same length")
    names = " and ".join(f"`{fn_name(item)}`" for item in items)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet):
            ok = check(*items)
    except CheckFailed:
        print(quiet.getvalue(), end="")
        raise
    if ok:
        print(f"✔ your {names} passed {fn_name(check)}: the cells below use yours")
        return yours
    print(f"→ your {names} has not passed {fn_name(check)} yet (its check cell says why), so the cells below use the "
          "course's reference implementation instead")
    return reference


# --------------------------------------------------------------------------------------------------- report
def passed(message: str) -> bool:
    """Print ``"✔ <message>"`` and return ``True``."""
    print(f"✔ {message}")
    return True


def fail(diagnosis: str, cause: BaseException | None = None) -> NoReturn:
    """Print ``"✘ <diagnosis>"`` and raise :class:`CheckFailed` with the same text.

    Args:
        diagnosis: what is wrong and how to fix it.
        cause: the learner's exception, chained so its traceback still points at the faulty line; ``None``
            suppresses any exception being handled (e.g. the ``NotImplementedError`` of an unsolved exercise).
    """
    print(f"✘ {diagnosis}")
    raise CheckFailed(diagnosis) from cause


# ------------------------------------------------------------------------------------------ calling the code
def fn_name(fn: Callable[..., Any]) -> str:
    """The name a learner would recognise: ``fn.__name__``, else its repr."""
    return getattr(fn, "__name__", None) or repr(fn)


def require_callable(fn: Any, expected: str) -> str:
    """Check that ``fn`` is callable and return its display name.

    Args:
        fn: what the learner passed to the checker.
        expected: the exercise's function name, used in the error message.

    Raises:
        TypeError: if ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(
            f"the checker expects your function itself, e.g. check_{expected}({expected}), but got "
            f"{describe(fn)} ({type(fn).__name__}). Pass the function without calling it (no parentheses)."
        )
    return fn_name(fn)


def describe(value: Any) -> str:
    """Short description of an argument for messages: tensors by shape (and non-default dtype), numbers as is."""
    if isinstance(value, torch.Tensor):
        text = f"tensor of shape {tuple(value.shape)}"
        if value.dtype != torch.float32:
            text += f" ({str(value.dtype).replace('torch.', '')})"
        return text
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_args(args: Case) -> str:
    """``"logits=tensor of shape (4, 7), temperature=2.5"``."""
    return ", ".join(f"{name}={describe(value)}" for name, value in args.items())


def _exception_hint(err: BaseException) -> str:
    text = str(err)
    if "Dimension out of range" in text:
        return (" Hint: index the class axis as dim=-1 (the last axis), not dim=1, so your code works for inputs "
                "with any number of dimensions.")
    if "must match the size of tensor" in text or "The size of tensor" in text:
        return (" Hint: a reduction along the last axis drops that axis; keep it with keepdim=True (e.g. "
                "x.max(dim=-1, keepdim=True).values or x.sum(dim=-1, keepdim=True)) so it broadcasts against x.")
    if "does not require grad" in text or "doesn't require grad" in text:
        return " Hint: don't detach the student's computation (.detach(), .item(), torch.no_grad())."
    if "that requires grad" in text:
        return (" Hint: stay in torch — .numpy(), .tolist() or .item() cut the computation graph, so no gradient "
                "could reach the student's logits.")
    if "expected scalar type Long" in text:
        return " Hint: class labels must be integer (torch.long) indices."
    return ""


def call_learner(fn: Callable[..., Any], args: Case) -> Any:
    """Call ``fn(*args.values())`` and return its result, turning every problem into a :class:`CheckFailed`.

    * ``NotImplementedError("hint")`` → "`fn` is not implemented yet — hint".
    * any other exception → a failure naming it and the arguments (shapes), with a hint for common ones.
    * a tensor argument modified in place → a failure (the caller's logits would be silently corrupted).

    Args:
        fn: the learner's function.
        args: arguments by name, in positional order; the names are only used in messages.
    """
    name = fn_name(fn)
    before = {key: value.detach().clone() for key, value in args.items() if isinstance(value, torch.Tensor)}
    try:
        out = fn(*args.values())
    except NotImplementedError as err:
        hint = str(err).strip() or "replace the `raise NotImplementedError(...)` line with your code."
        fail(f"`{name}` is not implemented yet — {hint}", cause=None)
    except CheckFailed:
        raise
    except Exception as err:  # the learner's bug, reported with its context
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if len(text) > _MAX_ERROR_TEXT:
            text = text[: _MAX_ERROR_TEXT - 3] + "..."
        fail(
            f"`{name}` raised {type(err).__name__}{': ' + text if text else ''} — when called with "
            f"{describe_args(args)}.{_exception_hint(err)}",
            cause=err,
        )
    for key, original in before.items():
        now = args[key]
        if now.shape != original.shape or not torch.equal(now.detach(), original):
            fail(
                f"`{name}` modified its input `{key}` in place (e.g. `{key} -= ...`, `{key}.sub_(...)` or "
                f"`{key}[...] = ...`), which silently changes the caller's tensor. Build a new tensor instead, "
                f"e.g. `shifted = {key} - ...`."
            )
    return out


def as_tensor_output(out: Any, name: str, what: str = "result") -> torch.Tensor:
    """Return ``out`` (detached) if it is a tensor; otherwise fail with a message about what was returned."""
    if isinstance(out, torch.Tensor):
        return out.detach()
    if out is None:
        fail(f"`{name}` returned None — did you forget the `return` statement?")
    if isinstance(out, (float, int)):
        fail(f"`{name}` returned a Python {type(out).__name__} ({out!r}); return the {what} as a torch.Tensor "
             "(don't call .item() or float(...) on it).")
    fail(f"`{name}` returned a {type(out).__name__}; the {what} must be a torch.Tensor.")


def close(a: torch.Tensor | None, b: torch.Tensor | None, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Same shape and ``allclose`` in float64 (NaN never counts as close)."""
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
        return False
    return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol))


def seeded_randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """``scale · N(0, 1)`` of the given shape from its own generator (the global RNG is left untouched)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen) * scale


def fmt(x: torch.Tensor | float, digits: int = 4, max_items: int = 6) -> str:
    """Round a number or a (flattened) tensor for messages: ``0.1235`` or ``[0.1, 0.2, ...]``."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            return f"{float(x):.{digits}g}"
        flat = x.detach().flatten().tolist()
        items = ", ".join(f"{v:.{digits}g}" for v in flat[:max_items])
        return f"[{items}{', ...' if len(flat) > max_items else ''}]"
    return f"{float(x):.{digits}g}"


# ---------------------------------------------------------------------------------------- mistake detection
def mistake_variants(dimensions: Dimensions, max_mistakes: int = 2) -> list[tuple[dict[str, Any], list[str]]]:
    """Every combination of at most ``max_mistakes`` wrong options, fewest mistakes first.

    Returns:
        ``[(choice, diagnoses), ...]`` where ``choice`` maps every aspect to a value (correct ones included)
        and ``diagnoses`` are the messages of its wrong options, in the order of ``dimensions``.
    """
    names = list(dimensions)
    correct = {name: dimensions[name][0][0] for name in names}
    variants: list[tuple[dict[str, Any], list[str]]] = []
    for k in range(1, max_mistakes + 1):
        for wrong_names in itertools.combinations(names, k):
            for options in itertools.product(*(dimensions[name][1:] for name in wrong_names)):
                choice = dict(correct)
                for name, (value, _) in zip(wrong_names, options):
                    choice[name] = value
                variants.append((choice, [message for _, message in options]))
    return variants


def run_cases(
    fn: Callable[..., Any],
    cases: Sequence[Case],
    reference: Callable[[Case], torch.Tensor],
    convert: Callable[[Any, str], torch.Tensor] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> tuple[list[torch.Tensor], int | None]:
    """Run the learner's function on every case and compare with the reference.

    If the function raises on a later case after an earlier case already gave a wrong result, the wrong result
    is diagnosed (it is usually the root cause) and the exception is not reported; an exception with no earlier
    mismatch fails the check right away.

    Args:
        fn: the learner's function.
        cases: argument mappings, simplest first.
        reference: ``reference(case)`` → expected tensor.
        convert: ``convert(raw_output, name)`` → tensor, failing on wrong types; default :func:`as_tensor_output`.

    Returns:
        ``(outputs, first_bad)``: the learner's outputs (one per case run) and the index of the first case whose
        output differs from the reference, or ``None`` if all agree.
    """
    name = fn_name(fn)
    convert = convert or as_tensor_output
    outputs: list[torch.Tensor] = []
    first_bad: int | None = None
    for i, case in enumerate(cases):
        # Once a result is wrong, later calls only help to recognise the mistake: keep them quiet, and if one of
        # them fails outright, diagnose the first wrong result instead (it is usually the root cause).
        quiet = contextlib.redirect_stdout(io.StringIO()) if first_bad is not None else contextlib.nullcontext()
        try:
            with quiet:
                out = convert(call_learner(fn, case), name)
        except CheckFailed:
            if first_bad is None:
                raise
            break
        outputs.append(out)
        if first_bad is None and not close(out, reference(case), rtol, atol):
            first_bad = i
    return outputs, first_bad


def find_mistakes(
    cases: Sequence[Case],
    outputs: Sequence[torch.Tensor],
    first_bad: int,
    compute: Callable[[Case, Mapping[str, Any]], torch.Tensor],
    dimensions: Dimensions,
    max_mistakes: int = 2,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> list[str] | None:
    """Find the simplest combination of known mistakes that reproduces the learner's outputs.

    A variant must match the learner on *every* case that was run; failing that, one matching the first wrong
    case alone is accepted (the learner may have a further, unknown difference elsewhere).

    Args:
        cases: the inputs, as given to :func:`run_cases`.
        outputs: the learner's outputs, one per case run (may be shorter than ``cases``).
        first_bad: index of the first wrong output.
        compute: ``compute(case, choice)`` → the output of the implementation that makes the mistakes in
            ``choice``; it may raise (e.g. a wrong axis that does not exist for 1-D input): no match then.
        dimensions: the mistake grid (see :data:`Dimensions`).

    Returns:
        The diagnoses of the matching variant, or ``None``.
    """
    variants = mistake_variants(dimensions, max_mistakes)

    def matches(choice: Mapping[str, Any], indices: Sequence[int]) -> bool:
        for i in indices:
            try:
                with torch.no_grad():
                    expected = compute(cases[i], choice)
            except Exception:
                return False
            if not close(outputs[i], expected, rtol, atol):
                return False
        return True

    for indices in (range(len(outputs)), [first_bad]):
        for choice, diagnoses in variants:
            if matches(choice, indices):
                return diagnoses
    return None


def mistakes_message(name: str, diagnoses: Sequence[str]) -> str:
    """One diagnosis as is; several as a numbered list."""
    if len(diagnoses) == 1:
        return f"`{name}`: {diagnoses[0]}"
    items = " ".join(f"({i}) {d}" for i, d in enumerate(diagnoses, 1))
    return f"`{name}` has {len(diagnoses)} problems: {items}"
