"""Build the embedded default corpus and tokenizer shipped in ``motif_titan/assets``.

The embedded assets let the debug model train on a fresh machine with no downloads
(``--training.dataset embedded --model.hf_assets_path embedded``). Everything is built
offline and deterministically from material that ships with CPython itself, so a rebuild
needs nothing but this repository's virtual environment (no Debian packages, no network)::

    python scripts/build_embedded_assets.py                 # writes motif_titan/assets
    python scripts/build_embedded_assets.py --out /tmp/x    # somewhere else

An offline tool of the repository, not part of the installed package.

Sources (read from the running interpreter's stdlib, found with ``sysconfig``):

* ``corpus/prose.jsonl``: English prose from CPython's own documentation:
  ``pydoc_data/topics.py`` (the Language Reference topics that ``help()`` shows), the
  docstrings of the non-test stdlib modules (parsed with ``ast``, never imported), and the
  stdlib ``LICENSE.txt`` (history of Python). Code blocks, doctests, grammar rules and
  reST header underlines are stripped; paragraphs are packed into documents.
* ``corpus/math.jsonl``: worked arithmetic, fractions, percentages, order of operations,
  Euclid's algorithm, prime factorisation, linear equations and 2x2 systems solved step by
  step, averages and word problems, generated with ``random.Random(MATH_SEED)``.
* ``corpus/code.jsonl``: the Python source of the fixed, sorted list ``CODE_MODULES`` of
  stdlib modules (no tests), each capped at ``MAX_CODE_CHARS_PER_MODULE`` characters and
  split at top-level statement / method boundaries.
* ``tokenizer/``: a byte-level BPE (GPT-2 style pre-tokenization, no normalization) trained
  with ``tokenizers`` on the three files, vocab size exactly ``VOCAB_SIZE`` = 2048 including
  the special tokens ``<|begin_of_text|>`` (id 0) and ``<|end_of_text|>`` (id 1).
  ``tokenizer_config.json`` names them as ``bos_token``/``eos_token`` so TorchTitan's
  ``HuggingFaceTokenizer`` sets ``bos_id``/``eos_id`` and adds them on
  ``encode(text, add_bos=True, add_eos=True)``.

The text depends on the CPython version's stdlib; the committed assets were built with
CPython 3.11.7 and tokenizers 0.23.3 and weigh (bytes on disk, tokens with the new tokenizer,
each document counted with its BOS and EOS):

=========  =========  =======  =========
file       documents  MB       tokens
=========  =========  =======  =========
prose      652        1.31     425,854
math       700        0.97     344,247
code       747        1.93     594,897
tokenizer             0.12
total      2,099      4.33     1,364,998
=========  =========  =======  =========
"""

import argparse
import ast
import json
import math
import random
import re
import sysconfig
import textwrap
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
VOCAB_SIZE = 2048
DOMAINS = ("prose", "math", "code")

MAX_DOCUMENT_CHARS = 3000
MIN_DOCUMENT_CHARS = 200
MIN_DOCSTRING_CHARS = 150
MAX_PROSE_CHARS = 2_000_000

MATH_SEED = 20240601
MATH_DOCUMENTS = 700

MAX_CODE_CHARS_PER_MODULE = 40_000
CODE_MODULES = (
    "abc.py",
    "argparse.py",
    "ast.py",
    "asyncio/locks.py",
    "asyncio/queues.py",
    "base64.py",
    "bdb.py",
    "bisect.py",
    "calendar.py",
    "cmd.py",
    "collections/__init__.py",
    "colorsys.py",
    "concurrent/futures/_base.py",
    "configparser.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "email/message.py",
    "enum.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "gettext.py",
    "glob.py",
    "graphlib.py",
    "hashlib.py",
    "heapq.py",
    "hmac.py",
    "html/parser.py",
    "http/client.py",
    "importlib/metadata/__init__.py",
    "inspect.py",
    "ipaddress.py",
    "json/__init__.py",
    "json/decoder.py",
    "json/encoder.py",
    "linecache.py",
    "logging/__init__.py",
    "numbers.py",
    "operator.py",
    "optparse.py",
    "os.py",
    "pathlib.py",
    "pickle.py",
    "posixpath.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "reprlib.py",
    "sched.py",
    "secrets.py",
    "selectors.py",
    "shlex.py",
    "shutil.py",
    "socketserver.py",
    "stat.py",
    "statistics.py",
    "string.py",
    "subprocess.py",
    "tempfile.py",
    "textwrap.py",
    "threading.py",
    "timeit.py",
    "tokenize.py",
    "tomllib/_parser.py",
    "trace.py",
    "traceback.py",
    "types.py",
    "typing.py",
    "urllib/parse.py",
    "uuid.py",
    "warnings.py",
    "weakref.py",
    "zipfile.py",
)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


# --------------------------------------------------------------------------- prose

_STOPWORDS = frozenset(
    "a an the is are was be been being of to in on at by for with as from that this these "
    "those it its and or but not no if then than which who when where how what there their "
    "they them can may must should will would has have had do does any all each some such "
    "only also into so more most other same one two used use".split()
)
_UNDERLINE = re.compile(r"^\s*([=*\-~^#\"'`+])\1{2,}\s*$")


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, trailing whitespace removed, empty blocks dropped."""
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [block.rstrip() for block in blocks if block.strip()]


def _indent(paragraph: str) -> int:
    return min(len(line) - len(line.lstrip()) for line in paragraph.splitlines() if line.strip())


_CODE_LINE = re.compile(
    r"^(?:(?:if|elif|while|for|with|def|class|async|try|except|else|finally)\b.*:$"
    r"|(?:def|class|import|return|raise|yield|await|assert|del|global|nonlocal)\b(?!.*[.,;]$)"
    r"|from\s+\S+\s+import\b|@\w|#|pass$|break$|continue$"
    r"|[\w.\[\]'\"]+\s*(?:[-+*/|&]?=)\s*[^=\s]"
    r"|[\w.]+\(.*\)$|[\]\)}],?$)"
)


def _reads_as_prose(paragraph: str) -> bool:
    """True for English sentences; False for code, doctests, grammar rules and tables."""
    lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
    if any(line.startswith((">>>", "...", "$ ", "%", "+--", "|")) for line in lines):
        return False
    if sum(bool(_CODE_LINE.match(line)) for line in lines) >= 0.4 * len(lines):
        return False
    if "::=" in paragraph or "\t" in paragraph:
        return False
    words = re.findall(r"[A-Za-z']+", paragraph)
    if len(words) < 4:
        return False
    stopword_share = sum(word.lower() in _STOPWORDS for word in words) / len(words)
    symbols = sum(paragraph.count(c) for c in "()[]{}=;_<>*+/%#@\\")
    letters = sum(c.isalpha() for c in paragraph)
    return stopword_share >= 0.18 and symbols <= 0.12 * letters


def _without_rest_markup(paragraph: str) -> str:
    """``:class:`Mock``` and ````x```` become ``"Mock"`` and ``"x"`` (the pydoc topics
    style); a literal-block marker ``::`` at the end becomes ``:``."""
    paragraph = re.sub(r":[\w:]+:`~?([^`<]+?)(?:\s*<[^>]*>)?`", r'"\1"', paragraph)
    paragraph = re.sub(r"``([^`]+)``", r'"\1"', paragraph)
    return re.sub(r"\s*::$", ":", paragraph)


def prose_paragraphs(text: str) -> list[str]:
    """Keep the prose of a plain-text (reST-rendered) document.

    Headers lose their underline; a short non-prose line directly followed by a more
    indented prose paragraph (a definition-list term such as ``object.__init__(self)`` or
    ``Note:``) is kept so the definition still has its subject; everything else that does
    not read as prose (code examples, doctests, grammar) is dropped. Kept paragraphs are
    dedented.
    """
    paragraphs = split_paragraphs(text)
    kept: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        lines = paragraph.splitlines()
        if len(lines) >= 2 and _UNDERLINE.match(lines[-1]):
            title = "\n".join(line for line in lines if not _UNDERLINE.match(line)).strip()
            if title:
                kept.append(title)
            continue
        if _reads_as_prose(paragraph):
            kept.append(_without_rest_markup(textwrap.dedent(paragraph).strip("\n")))
            continue
        following = paragraphs[index + 1] if index + 1 < len(paragraphs) else None
        is_term = (
            len(lines) == 1
            and len(paragraph.strip()) <= 80
            and following is not None
            and _indent(following) > _indent(paragraph)
            and _reads_as_prose(following)
        )
        if is_term:
            kept.append(paragraph.strip())
    return kept


def pack_paragraphs(paragraphs: Iterable[str], max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """Greedily join consecutive paragraphs into documents of at most ``max_chars``."""
    documents: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if current and size + len(paragraph) + 2 > max_chars:
            documents.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 2
    if current:
        documents.append("\n\n".join(current))
    return documents


def _is_test_or_tooling(relative: Path) -> bool:
    skipped_dirs = {"test", "tests", "idle_test", "site-packages", "lib2to3", "turtledemo"}
    return (
        bool(skipped_dirs.intersection(relative.parts))
        or relative.parts[0].startswith("config-")
        or relative.name.startswith("test_")
        or relative.name == "topics.py"
    )


def stdlib_module_files(root: Path) -> list[Path]:
    """All non-test stdlib ``.py`` files, sorted by relative path."""
    files = (path for path in root.rglob("*.py") if not _is_test_or_tooling(path.relative_to(root)))
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def docstring_paragraphs(path: Path, root: Path) -> list[str]:
    """The prose of a module's module/class/function docstrings, each headed by its name."""
    module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
    module = module.removesuffix(".__init__")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    paragraphs: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                docstring = ast.get_docstring(child)
                if docstring and len(docstring) >= MIN_DOCSTRING_CHARS:
                    body = prose_paragraphs(docstring)
                    if body:
                        kind = "class" if isinstance(child, ast.ClassDef) else "function"
                        paragraphs.append(f"The {kind} {name}:")
                        paragraphs.extend(body)
                visit(child, name)

    module_docstring = ast.get_docstring(tree)
    if module_docstring:
        body = prose_paragraphs(module_docstring)
        if body:
            paragraphs.append(f"The module {module}:")
            paragraphs.extend(body)
    visit(tree, module)
    return paragraphs


def prose_documents(root: Path) -> list[str]:
    import pydoc_data.topics

    documents: list[str] = []
    for topic in sorted(pydoc_data.topics.topics):
        documents.extend(pack_paragraphs(prose_paragraphs(pydoc_data.topics.topics[topic])))
    license_file = root / "LICENSE.txt"
    if license_file.exists():
        documents.extend(pack_paragraphs(prose_paragraphs(license_file.read_text(encoding="utf-8"))))
    code_files = {root / name for name in CODE_MODULES}
    for path in stdlib_module_files(root):
        if path not in code_files:
            documents.extend(pack_paragraphs(docstring_paragraphs(path, root)))
    documents = [doc for doc in documents if len(doc) >= MIN_DOCUMENT_CHARS]
    kept, total = [], 0
    for document in documents:
        if total + len(document) > MAX_PROSE_CHARS:
            break
        kept.append(document)
        total += len(document)
    return kept


# --------------------------------------------------------------------------- code


def code_chunks(source: str, max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """Split Python source before top-level statements and method definitions (or their
    decorators and comments) that follow a blank line, then pack the blocks greedily.

    A block still longer than ``max_chars`` is split further at blank lines.
    """
    lines = source.splitlines(keepends=True)
    boundary = re.compile(r"^(\S|    (async def |def |@))")
    blocks: list[str] = []
    current: list[str] = []
    for index, line in enumerate(lines):
        after_blank_line = index > 0 and not lines[index - 1].strip()
        if current and after_blank_line and boundary.match(line):
            blocks.append("".join(current))
            current = []
        current.append(line)
    if current:
        blocks.append("".join(current))

    pieces: list[str] = []
    for block in blocks:
        if len(block) <= max_chars:
            pieces.append(block)
        else:
            pieces.extend(part + "\n\n" for part in block.split("\n\n"))
    chunks: list[str] = []
    chunk = ""
    for piece in pieces:
        if chunk and len(chunk) + len(piece) > max_chars:
            chunks.append(chunk)
            chunk = ""
        chunk += piece
    if chunk:
        chunks.append(chunk)
    return [chunk.strip("\n") + "\n" for chunk in chunks if chunk.strip()]


def code_documents(root: Path) -> list[str]:
    documents: list[str] = []
    for name in sorted(CODE_MODULES):
        path = root / name
        if not path.exists():
            continue
        total = 0
        for chunk in code_chunks(path.read_text(encoding="utf-8")):
            if total + len(chunk) > MAX_CODE_CHARS_PER_MODULE:
                break
            documents.append(f"# {name}\n{chunk}" if total == 0 else chunk)
            total += len(chunk)
    return [doc for doc in documents if len(doc) >= MIN_DOCUMENT_CHARS // 2]


# --------------------------------------------------------------------------- math

_NAMES = (
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
    "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq",
)
_ITEMS = (
    ("notebook", "notebooks"), ("apple", "apples"), ("pencil", "pencils"),
    ("ticket", "tickets"), ("book", "books"), ("sandwich", "sandwiches"),
    ("plant", "plants"), ("bottle of juice", "bottles of juice"), ("candle", "candles"),
)


def _plural(count: int, forms: tuple[str, str]) -> str:
    return f"{count} {forms[0] if count == 1 else forms[1]}"


def _money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def _fraction(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _parenthesized(value: int) -> str:
    return f"({value})" if value < 0 else str(value)


def _linear_expression(*terms: tuple[int, str]) -> str:
    """``(3, "x"), (-4, "y"), (5, "")`` -> ``3x - 4y + 5``; zero terms are left out."""
    text = ""
    for coefficient, variable in terms:
        if coefficient == 0 and (variable or text):
            continue
        magnitude = "" if abs(coefficient) == 1 and variable else str(abs(coefficient))
        if not text:
            text = f"{'-' if coefficient < 0 else ''}{magnitude}{variable}"
        else:
            text += f" {'-' if coefficient < 0 else '+'} {magnitude}{variable}"
    return text or "0"


def column_addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(100, 99999), rng.randint(100, 99999)
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    places = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")
    for i in range(max(len(digits_a), len(digits_b))):
        da = int(digits_a[i]) if i < len(digits_a) else 0
        db = int(digits_b[i]) if i < len(digits_b) else 0
        total = da + db + carry
        carry_text = f" + {carry} (carried)" if carry else ""
        new_carry = total // 10
        write = f"write {total % 10}" + (f" and carry {new_carry}" if new_carry else "")
        steps.append(f"{places[i].capitalize()}: {da} + {db}{carry_text} = {total}, {write}.")
        carry = new_carry
    if carry:
        steps.append(f"The final carry {carry} becomes the leading digit.")
    question = f"Add {a} and {b} using the column method."
    solution = "\n".join(steps) + f"\nSo {a} + {b} = {a + b}."
    return question, solution + f"\nAnswer: {a + b}"


def subtraction_with_check(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(1000, 99999)
    b = rng.randint(100, a - 1)
    difference = a - b
    solution = (
        f"Subtract part by part: {a} - {b - b % 100} = {a - (b - b % 100)}, "
        f"then {a - (b - b % 100)} - {b % 100} = {difference}.\n"
        f"Check by adding back: {difference} + {b} = {a}, which matches.\nAnswer: {difference}"
    )
    return f"Compute {a} - {b} and check the result.", solution


def partial_products(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(12, 999), rng.choice([n for n in range(11, 100) if n % 10])
    tens, ones = b - b % 10, b % 10
    lines = [f"Split {b} into {tens} + {ones}."]
    lines.append(f"{a} × {tens} = {a * tens}")
    lines.append(f"{a} × {ones} = {a * ones}")
    lines.append(f"Add the partial products: {a * tens} + {a * ones} = {a * b}.")
    return f"Multiply {a} by {b}.", "\n".join(lines) + f"\nAnswer: {a * b}"


def long_division(rng: random.Random) -> tuple[str, str]:
    divisor = rng.randint(3, 29)
    dividend = rng.randint(divisor * 10, divisor * 999)
    lines, remainder, quotient_digits = [], 0, ""
    for digit in str(dividend):
        current = remainder * 10 + int(digit)
        q = current // divisor
        remainder = current - q * divisor
        if quotient_digits or q:
            lines.append(
                f"Bring down {digit} to get {current}. {current} / {divisor} = {q}, "
                f"since {q} × {divisor} = {q * divisor}; remainder {remainder}."
            )
        quotient_digits += str(q)
    quotient = int(quotient_digits)
    lines.append(f"Check: {quotient} × {divisor} + {remainder} = {quotient * divisor + remainder}.")
    answer = f"{quotient} remainder {remainder}" if remainder else str(quotient)
    return f"Divide {dividend} by {divisor}.", "\n".join(lines) + f"\nAnswer: {answer}"


def fraction_sum(rng: random.Random) -> tuple[str, str]:
    a = Fraction(rng.randint(1, 11), rng.randint(2, 12))
    b = Fraction(rng.randint(1, 11), rng.randint(2, 12))
    subtract = rng.random() < 0.4 and a > b
    op, result = ("-", a - b) if subtract else ("+", a + b)
    common = math.lcm(a.denominator, b.denominator)
    na, nb = a.numerator * common // a.denominator, b.numerator * common // b.denominator
    raw = na - nb if subtract else na + nb
    lines = [
        f"The least common denominator of {a.denominator} and {b.denominator} is {common}.",
        f"{_fraction(a)} = {na}/{common} and {_fraction(b)} = {nb}/{common}.",
        f"{na}/{common} {op} {nb}/{common} = {raw}/{common}.",
    ]
    divisor = math.gcd(raw, common)
    if divisor > 1:
        lines.append(f"Divide numerator and denominator by {divisor}: {raw}/{common} = {_fraction(result)}.")
    else:
        lines.append(f"{raw}/{common} is already in lowest terms.")
    return f"Calculate {_fraction(a)} {op} {_fraction(b)}.", "\n".join(lines) + f"\nAnswer: {_fraction(result)}"


def fraction_product(rng: random.Random) -> tuple[str, str]:
    a = Fraction(rng.randint(1, 9), rng.randint(2, 10))
    b = Fraction(rng.randint(1, 9), rng.randint(2, 10))
    if rng.random() < 0.5:
        top, bottom = a.numerator * b.numerator, a.denominator * b.denominator
        lines = [f"Multiply the numerators and the denominators: ({a.numerator} × {b.numerator})/({a.denominator} × {b.denominator}) = {top}/{bottom}."]
        question, result = f"Multiply {_fraction(a)} by {_fraction(b)}.", a * b
    else:
        top, bottom = a.numerator * b.denominator, a.denominator * b.numerator
        lines = [
            f"Dividing by {_fraction(b)} is the same as multiplying by its reciprocal {b.denominator}/{b.numerator}.",
            f"{_fraction(a)} × {b.denominator}/{b.numerator} = {top}/{bottom}.",
        ]
        question, result = f"Divide {_fraction(a)} by {_fraction(b)}.", a / b
    if math.gcd(top, bottom) > 1:
        lines.append(f"Simplify by the common factor {math.gcd(top, bottom)}: {top}/{bottom} = {_fraction(result)}.")
    return question, "\n".join(lines) + f"\nAnswer: {_fraction(result)}"


def linear_equation(rng: random.Random) -> tuple[str, str]:
    x = rng.randint(-12, 15)
    a = rng.choice([n for n in range(-9, 10) if n not in (0, 1)])
    b = rng.randint(-30, 30)
    if rng.random() < 0.5:
        c = a * x + b
        lines = [
            f"{'Subtract' if b >= 0 else 'Add'} {abs(b)} {'from' if b >= 0 else 'to'} both sides: {_linear_expression((a, 'x'))} = {c} {'-' if b >= 0 else '+'} {abs(b)} = {c - b}.",
            f"Divide both sides by {a}: x = {c - b} / {_parenthesized(a)} = {x}.",
            f"Check: {a} × {_parenthesized(x)} {'+' if b >= 0 else '-'} {abs(b)} = {c}.",
        ]
        return f"Solve for x: {_linear_expression((a, 'x'), (b, ''))} = {c}.", "\n".join(lines) + f"\nAnswer: x = {x}"
    c = rng.choice([n for n in range(-9, 10) if n not in (0, a)])
    d = a * x + b - c * x
    equation = f"{_linear_expression((a, 'x'), (b, ''))} = {_linear_expression((c, 'x'), (d, ''))}"
    lines = [
        f"Move the x terms to the left by {'subtracting' if c > 0 else 'adding'} {_linear_expression((abs(c), 'x'))} {'from' if c > 0 else 'to'} both sides: {_linear_expression((a - c, 'x'), (b, ''))} = {d}.",
        f"Move the constant to the right: {_linear_expression((a - c, 'x'))} = {d} {'-' if b >= 0 else '+'} {abs(b)} = {d - b}.",
        f"Divide by {a - c}: x = {d - b} / {_parenthesized(a - c)} = {x}.",
        f"Check: the left side is {a * x + b} and the right side is {c * x + d}.",
    ]
    return f"Solve the equation {equation}.", "\n".join(lines) + f"\nAnswer: x = {x}"


def linear_system(rng: random.Random) -> tuple[str, str]:
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    a1, b1, a2, b2 = (rng.choice([n for n in range(-6, 7) if n]) for _ in range(4))
    while a1 * b2 - a2 * b1 == 0:
        b2 = rng.choice([n for n in range(-6, 7) if n])
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y

    def equation(a: int, b: int, c: int) -> str:
        return f"{_linear_expression((a, 'x'), (b, 'y'))} = {c}"

    det = a1 * b2 - a2 * b1
    lines = [
        f"Multiply the first equation by {b2} and the second by {b1}:",
        equation(a1 * b2, b1 * b2, c1 * b2),
        equation(a2 * b1, b1 * b2, c2 * b1),
        f"Subtract to eliminate y: {_linear_expression((det, 'x'))} = {c1 * b2 - c2 * b1}, so x = {x}.",
        f"Substitute into the first equation: {a1} × {_parenthesized(x)} {'+' if b1 > 0 else '-'} {abs(b1)}y = {c1}, "
        f"so {_linear_expression((b1, 'y'))} = {c1 - a1 * x} and y = {y}.",
    ]
    question = f"Solve the system {equation(a1, b1, c1)} and {equation(a2, b2, c2)}."
    return question, "\n".join(lines) + f"\nAnswer: x = {x}, y = {y}"


def percentage(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        percent, base = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75]), rng.randint(2, 80) * 20
        value = Fraction(percent * base, 100)
        solution = (
            f"{percent}% means {percent}/100. {percent}/100 × {base} = {percent * base}/100 = {_fraction(value)}."
        )
        return f"What is {percent}% of {base}?", solution + f"\nAnswer: {_fraction(value)}"
    old = rng.randint(4, 60) * 10
    change = rng.choice([-50, -25, -20, -10, 10, 20, 25, 40, 50, 100])
    new = old + old * change // 100
    direction = "increase" if new > old else "decrease"
    solution = (
        f"The change is {new} - {old} = {new - old}.\n"
        f"Divide by the original value: {new - old} / {old} = {Fraction(new - old, old)} = {change / 100:g}.\n"
        f"Multiply by 100 to get a {abs(change)}% {direction}."
    )
    return f"A price changes from {old} to {new}. What is the percentage change?", solution + f"\nAnswer: {change:+d}%"


def order_of_operations(rng: random.Random) -> tuple[str, str]:
    def build(depth: int):
        if depth == 0 or rng.random() < 0.3:
            return rng.randint(1, 12)
        return (rng.choice("+-*"), build(depth - 1), build(depth - 1))

    precedence = {"+": 1, "-": 1, "*": 2}

    def render(node, parent: int = 0, right: bool = False) -> str:
        if isinstance(node, int):
            return f"({node})" if node < 0 and right else str(node)
        op, left, right_node = node
        text = f"{render(left, precedence[op])} {'×' if op == '*' else op} {render(right_node, precedence[op], True)}"
        needs_parens = precedence[op] < parent or (right and precedence[op] == parent and op != "*")
        return f"({text})" if needs_parens else text

    def reduce_once(node):
        op, left, right_node = node
        if isinstance(left, int) and isinstance(right_node, int):
            return {"+": left + right_node, "-": left - right_node, "*": left * right_node}[op]
        if not isinstance(left, int) and (isinstance(right_node, int) or precedence[left[0]] >= precedence[right_node[0]]):
            return (op, reduce_once(left), right_node)
        return (op, left, reduce_once(right_node))

    node = build(3)
    while isinstance(node, int) or sum(isinstance(part, tuple) for part in node[1:]) == 0 and rng.random() < 0.7:
        node = build(3)
    expression = render(node)
    steps = []
    while not isinstance(node, int):
        node = reduce_once(node)
        steps.append(f"= {render(node)}")
    solution = "Work inside parentheses first, then multiplication, then addition and subtraction from left to right.\n"
    return f"Evaluate {expression}.", solution + f"{expression}\n" + "\n".join(steps) + f"\nAnswer: {node}"


def euclid_gcd(rng: random.Random) -> tuple[str, str]:
    factor = rng.randint(2, 30)
    a, b = factor * rng.randint(3, 60), factor * rng.randint(2, 40)
    a, b = max(a, b), min(a, b)
    if a == b:
        b = factor
    lines, x, y = [], a, b
    while y:
        lines.append(f"{x} = {x // y} × {y} + {x % y}")
        x, y = y, x % y
    lcm = a * b // x
    lines.append(f"The last non-zero remainder is {x}, so gcd({a}, {b}) = {x}.")
    lines.append(f"The least common multiple is {a} × {b} / {x} = {lcm}.")
    return f"Use Euclid's algorithm to find the greatest common divisor of {a} and {b}, then their least common multiple.", "\n".join(lines) + f"\nAnswer: gcd = {x}, lcm = {lcm}"


def prime_factorization(rng: random.Random) -> tuple[str, str]:
    n = 1
    while n < 30:
        n = math.prod(rng.choice([2, 2, 2, 3, 3, 5, 7, 11, 13]) for _ in range(rng.randint(2, 6)))
    lines, remaining, factors, p = [], n, [], 2
    while remaining > 1:
        if remaining % p == 0:
            lines.append(f"{remaining} is divisible by {p}: {remaining} / {p} = {remaining // p}.")
            factors.append(p)
            remaining //= p
        else:
            p += 1
    powers = []
    for prime in sorted(set(factors)):
        count = factors.count(prime)
        powers.append(f"{prime}^{count}" if count > 1 else str(prime))
    return f"Write {n} as a product of prime factors.", "\n".join(lines) + f"\nSo {n} = {' × '.join(powers)}.\nAnswer: {' × '.join(powers)}"


def average(rng: random.Random) -> tuple[str, str]:
    values = [rng.randint(1, 99) for _ in range(rng.randint(4, 9))]
    total = sum(values)
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        median_text = f"the middle value is {ordered[middle]}"
        median = Fraction(ordered[middle])
    else:
        median = Fraction(ordered[middle - 1] + ordered[middle], 2)
        median_text = f"the two middle values are {ordered[middle - 1]} and {ordered[middle]}, whose mean is {float(median):g}"
    mean = Fraction(total, len(values))
    lines = [
        f"The sum is {' + '.join(map(str, values))} = {total}.",
        f"There are {len(values)} values, so the mean is {total} / {len(values)} = {float(mean):.4g}.",
        f"Sorted: {', '.join(map(str, ordered))}; {median_text}.",
    ]
    return f"Find the mean and the median of {', '.join(map(str, values))}.", "\n".join(lines) + f"\nAnswer: mean {float(mean):.4g}, median {float(median):g}"


def shopping_problem(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    count, price = rng.randint(2, 9), rng.randint(35, 950)
    cost = count * price
    paid = next(bill for bill in (500, 1000, 2000, 5000, 10000) if bill >= cost)
    question = f"{name} buys {_plural(count, item)} at {_money(price)} each and pays with a {_money(paid)} bill. How much change does {name} get?"
    solution = (
        f"The total cost is {count} × {_money(price)} = {_money(cost)}.\n"
        f"The change is {_money(paid)} - {_money(cost)} = {_money(paid - cost)}."
    )
    return question, solution + f"\nAnswer: {_money(paid - cost)}"


def travel_problem(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(_NAMES)
    speed, hours = rng.randint(3, 24) * 5, rng.choice([Fraction(1, 2), Fraction(3, 2), 2, Fraction(5, 2), 3, 4])
    distance = speed * hours
    vehicle = rng.choice(["drives", "cycles", "takes a train", "rides a bus"])
    if rng.random() < 0.5:
        question = f"{name} {vehicle} at {speed} km/h for {_fraction(Fraction(hours))} hours. How far does {name} travel?"
        solution = f"Distance = speed × time = {speed} × {_fraction(Fraction(hours))} = {_fraction(Fraction(distance))} km."
        return question, solution + f"\nAnswer: {_fraction(Fraction(distance))} km"
    minutes = int(hours * 60)
    question = f"{name} {vehicle} {_fraction(Fraction(distance))} km at a steady {speed} km/h. How many minutes does the trip take?"
    solution = (
        f"Time = distance / speed = {_fraction(Fraction(distance))} / {speed} = {_fraction(Fraction(hours))} hours.\n"
        f"In minutes: {_fraction(Fraction(hours))} × 60 = {minutes}."
    )
    return question, solution + f"\nAnswer: {minutes} minutes"


def sharing_problem(rng: random.Random) -> tuple[str, str]:
    people, item = rng.randint(3, 12), rng.choice(_ITEMS)
    total = rng.randint(people + 1, people * 15)
    each, left = divmod(total, people)
    question = f"{_plural(total, item).capitalize()} are shared equally among {people} friends. How many does each friend get, and how many are left over?"
    solution = f"{total} / {people} = {each} with remainder {left}, because {each} × {people} = {each * people} and {total} - {each * people} = {left}."
    return question, solution + f"\nAnswer: {each} each, {left} left over"


def ages_problem(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(_NAMES, 2)
    younger, gap = rng.randint(3, 40), rng.randint(1, 30)
    older = younger + gap
    total = younger + older
    question = f"{first} is {gap} years older than {second}. Together their ages add up to {total}. How old is each of them?"
    solution = (
        f"Let {second}'s age be a. Then {first}'s age is a + {gap}.\n"
        f"a + (a + {gap}) = {total}, so 2a = {total - gap} and a = {younger}.\n"
        f"{first} is {younger} + {gap} = {older}."
    )
    return question, solution + f"\nAnswer: {second} is {younger}, {first} is {older}"


def rectangle_problem(rng: random.Random) -> tuple[str, str]:
    width, length = rng.randint(2, 40), rng.randint(2, 60)
    thing = rng.choice(["garden", "room", "field", "table top", "poster"])
    question = f"A rectangular {thing} is {length} m long and {width} m wide. Find its area and its perimeter."
    solution = (
        f"Area = length × width = {length} × {width} = {length * width} square metres.\n"
        f"Perimeter = 2 × (length + width) = 2 × ({length} + {width}) = 2 × {length + width} = {2 * (length + width)} m."
    )
    return question, solution + f"\nAnswer: area {length * width} m^2, perimeter {2 * (length + width)} m"


def recipe_problem(rng: random.Random) -> tuple[str, str]:
    serves, wanted = rng.choice([2, 3, 4, 6, 8]), rng.choice([3, 5, 6, 9, 10, 12])
    amount = Fraction(rng.randint(1, 8), rng.choice([1, 2, 3, 4]))
    ingredient = rng.choice(["cups of flour", "cups of milk", "spoons of sugar", "eggs", "cups of rice"])
    scaled = amount * Fraction(wanted, serves)
    question = f"A recipe for {serves} people uses {_fraction(amount)} {ingredient}. How much is needed for {wanted} people?"
    solution = (
        f"Scale by {wanted}/{serves}: {_fraction(amount)} × {wanted}/{serves} = {_fraction(scaled)}."
        + (f" That is about {float(scaled):.2f}." if scaled.denominator != 1 else "")
    )
    return question, solution + f"\nAnswer: {_fraction(scaled)} {ingredient}"


def powers(rng: random.Random) -> tuple[str, str]:
    base, exponent = rng.randint(2, 12), rng.randint(2, 5)
    steps, value = [str(base)], base
    for _ in range(exponent - 1):
        steps.append(f"{value} × {base} = {value * base}")
        value *= base
    return f"Compute {base}^{exponent}.", f"Multiply {base} by itself {exponent} times:\n" + "\n".join(steps) + f"\nAnswer: {value}"


MATH_PROBLEMS: tuple[tuple[str, Callable[[random.Random], tuple[str, str]]], ...] = (
    ("Arithmetic", column_addition),
    ("Arithmetic", subtraction_with_check),
    ("Arithmetic", partial_products),
    ("Arithmetic", long_division),
    ("Arithmetic", order_of_operations),
    ("Arithmetic", powers),
    ("Fractions", fraction_sum),
    ("Fractions", fraction_product),
    ("Percentages", percentage),
    ("Number theory", euclid_gcd),
    ("Number theory", prime_factorization),
    ("Algebra", linear_equation),
    ("Algebra", linear_system),
    ("Statistics", average),
    ("Word problems", shopping_problem),
    ("Word problems", travel_problem),
    ("Word problems", sharing_problem),
    ("Word problems", ages_problem),
    ("Word problems", rectangle_problem),
    ("Word problems", recipe_problem),
)


def math_documents(seed: int = MATH_SEED, count: int = MATH_DOCUMENTS) -> list[str]:
    """Worksheets of 3 to 8 worked problems each, drawn from a seeded generator."""
    rng = random.Random(seed)
    documents = []
    for sheet in range(count):
        problems = [rng.choice(MATH_PROBLEMS) for _ in range(rng.randint(3, 8))]
        topics = sorted({topic for topic, _ in problems})
        parts = [f"Worked examples, sheet {sheet + 1}: {', '.join(topics).lower()}."]
        for number, (_, make_problem) in enumerate(problems, start=1):
            question, solution = make_problem(rng)
            parts.append(f"Problem {number}. {question}\nSolution:\n{solution}")
        documents.append("\n\n".join(parts))
    return documents


# --------------------------------------------------------------------------- assets


def write_jsonl(path: Path, documents: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for document in documents:
            out.write(json.dumps({"text": document}, ensure_ascii=False) + "\n")


def read_jsonl_texts(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)["text"]


def train_tokenizer(corpus_files: list[Path], out_dir: Path, vocab_size: int = VOCAB_SIZE) -> None:
    """Train a byte-level BPE on ``corpus_files`` and write a TorchTitan-loadable tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [text for path in corpus_files for text in read_jsonl_texts(path)]
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"trained vocab has {tokenizer.get_vocab_size()} tokens, expected {vocab_size}")

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    special = {
        str(tokenizer.token_to_id(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in (BOS_TOKEN, EOS_TOKEN)
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
        "added_tokens_decoder": special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def build_embedded_assets(out_dir: Path) -> dict[str, list[str]]:
    """Write ``corpus/{prose,math,code}.jsonl`` and ``tokenizer/`` under ``out_dir``."""
    root = stdlib_dir()
    if not (root / "pydoc_data" / "topics.py").exists():
        raise FileNotFoundError(
            f"CPython stdlib at {root} lacks pydoc_data/topics.py; the embedded corpus is built "
            "from the stdlib that ships with Python (some distributions split it into extra "
            "packages, e.g. Debian's libpython3.x-stdlib)"
        )
    corpora = {
        "prose": prose_documents(root),
        "math": math_documents(),
        "code": code_documents(root),
    }
    corpus_dir = out_dir / "corpus"
    for domain in DOMAINS:
        write_jsonl(corpus_dir / f"{domain}.jsonl", corpora[domain])
    train_tokenizer([corpus_dir / f"{domain}.jsonl" for domain in DOMAINS], out_dir / "tokenizer")
    return corpora


def describe_assets(out_dir: Path) -> str:
    """A table of documents, megabytes and tokens (with BOS/EOS) per corpus file."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer" / "tokenizer.json"))
    rows, total_bytes, total_tokens = [], 0, 0
    for domain in DOMAINS:
        path = out_dir / "corpus" / f"{domain}.jsonl"
        texts = list(read_jsonl_texts(path))
        tokens = sum(len(encoding.ids) + 2 for encoding in tokenizer.encode_batch(texts))
        size = path.stat().st_size
        total_bytes += size
        total_tokens += tokens
        rows.append(f"{domain:<10} {len(texts):>6} docs {size / 1e6:6.2f} MB {tokens:>10,} tokens")
    tokenizer_bytes = sum(p.stat().st_size for p in (out_dir / "tokenizer").iterdir())
    rows.append(f"{'tokenizer':<10} {'':>11} {tokenizer_bytes / 1e6:6.2f} MB")
    rows.append(f"{'total':<10} {'':>11} {(total_bytes + tokenizer_bytes) / 1e6:6.2f} MB {total_tokens:>10,} tokens")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "motif_titan" / "assets",
        help="output directory (default: motif_titan/assets)",
    )
    args = parser.parse_args(argv)
    build_embedded_assets(args.out)
    print(describe_assets(args.out))


if __name__ == "__main__":
    main()
