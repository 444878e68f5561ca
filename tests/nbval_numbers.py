"""nbval with a tolerance on printed numbers: one unit in the last printed digit, text compared exactly.

The committed notebooks were executed on one machine; on another, a different thread count or CPU instruction set
(oneDNN picks its convolution kernels by ISA) can move the last digit of a printed number (``0.0525`` against
``0.0526``). nbval compares outputs as strings, so such a run fails although nothing a reader could act on changed.

This plugin keeps nbval as the runner and changes only what counts as equal. Two outputs match when

* their text outside numbers is identical (words, spaces, punctuation, line breaks, the count of numbers), and
* each pair of numbers with a decimal point or an exponent differs by at most one unit in the last printed digit
  of the reference: ``0.0525``/``0.0526`` and ``1.00``/``0.99`` match, ``0.052``/``0.055`` does not,
  ``1.2e-05``/``1.3e-05`` match, and ``0.523``/``0`` does not (the reference's digits set the unit, so a value
  that collapses to a shorter literal is not excused by its own coarseness);
* integers (counts, N, class indices, sizes) are equal.

A number is a decimal literal (optional ``-`` or ``+``, fraction, exponent) that is not part of a word: the ``2`` of
``conv2d`` or ``float32`` and the ``18`` of ``ResNet-18`` are text, compared exactly, and so are thousands
separators (``20,000`` is the integers 20 and 000) and the minus sign U+2212. Where
the outputs match under this rule the plugin hands nbval the reference text, so nbval's own comparison (sanitizers,
output types, stream names, number of outputs) still decides, and its diff is what a mismatch prints.

Loaded by the root ``conftest.py``; it wraps nbval's collector so that every notebook cell uses
:class:`TolerantCell`.
"""

from __future__ import annotations

import copy
import re
from decimal import Decimal

import pytest
from nbval.plugin import IPyNbCell, IPyNbFile

# A number not glued to a word: its first character (sign or digit) follows no letter, digit, underscore, dot or sign,
# so ``ResNet-18``, ``x-1`` and ``conv2d`` hold no number; and no letter, digit, underscore or ``.digit`` follows its
# last.
NUMBER = re.compile(r"(?<![\w.+\-\u2212])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?!\w|\.\d)")


def _split(text: str) -> tuple[list[str], list[str]]:
    """The text between numbers (one more piece than numbers) and the numbers themselves."""
    pieces, numbers, start = [], [], 0
    for match in NUMBER.finditer(text):
        pieces.append(text[start : match.start()])
        numbers.append(match.group(0))
        start = match.end()
    pieces.append(text[start:])
    return pieces, numbers


def _is_integer(literal: str) -> bool:
    return not any(c in literal for c in ".eE")


def _last_digit_unit(literal: str) -> Decimal:
    """One unit in the last printed digit: 0.0525 -> 0.0001, 1.00 -> 0.01, 1.2e-05 -> 1e-06."""
    return Decimal(1).scaleb(Decimal(literal).as_tuple().exponent)


def numbers_close(reference: str, actual: str) -> bool:
    """Whether a printed number matches its reference: integers exactly, others within one unit in the reference's
    last printed digit."""
    if _is_integer(reference) or _is_integer(actual):
        return reference == actual
    return abs(Decimal(reference) - Decimal(actual)) <= _last_digit_unit(reference)


def outputs_match(reference: str, actual: str) -> bool:
    """Whether two output texts are equal but for numbers within one unit in their last printed digit."""
    if reference == actual:
        return True
    ref_text, ref_numbers = _split(reference)
    act_text, act_numbers = _split(actual)
    return (
        ref_text == act_text
        and len(ref_numbers) == len(act_numbers)
        and all(numbers_close(r, a) for r, a in zip(ref_numbers, act_numbers, strict=True))
    )


class TolerantCell(IPyNbCell):
    """An nbval cell whose text outputs match the reference when :func:`outputs_match` says so."""

    def compare_outputs(self, test, ref, skip_compare=None):
        return super().compare_outputs(self._adopt_reference_numbers(test, ref), ref, skip_compare)

    def _adopt_reference_numbers(self, test: list, ref: list) -> list:
        """A copy of ``test`` in which each text that tolerantly matches its reference (paired by position, same
        output type and stream) is replaced by the reference text; everything else is left for nbval to judge."""
        adopted = []
        for index, output in enumerate(test):
            output = copy.deepcopy(output)
            reference = ref[index] if index < len(ref) else None
            if reference is None or reference.get("output_type") != output.get("output_type"):
                adopted.append(output)
                continue
            same_stream = output.get("output_type") == "stream" and reference.get("name") == output.get("name")
            if same_stream and outputs_match(self.sanitize(reference["text"]), self.sanitize(output["text"])):
                output["text"] = reference["text"]
            for mime, value in output.get("data", {}).items():
                expected = reference.get("data", {}).get(mime)
                texts = isinstance(value, str) and isinstance(expected, str)
                if texts and outputs_match(self.sanitize(expected), self.sanitize(value)):
                    output["data"][mime] = expected
            adopted.append(output)
        return adopted


class TolerantNotebook(IPyNbFile):
    """nbval's notebook collector, yielding :class:`TolerantCell` items."""

    def collect(self):
        for cell in super().collect():
            yield TolerantCell.from_parent(
                self, name=cell.name, cell_num=cell.cell_num, cell=cell.cell, options=cell.options
            )


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    collectors = yield
    return [
        TolerantNotebook.from_parent(parent, path=file_path) if type(c) is IPyNbFile else c for c in collectors or []
    ]
