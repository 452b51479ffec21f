"""derive verify over random well-formed formulas (a seeded generator of our own, so the cases are the same
in every run): a formula built equal to the derived result verifies EQUIVALENT, and the same formula
perturbed by a term, a factor, a sign or an index does not."""
import random

import pytest

from derive.verifier.reading import names_of
from derive.verifier.verification import _derived_tex, read, verify, world_of

SEED = 16
ROUNDS = 3  # per target: a formula built equal, and four perturbed
#: (op or chain, --wrt): ops and quantities whose every input is real-valued (no 0/1 masks, which could
#: make a perturbation vanish), one sample and batch form, index and sum-over-n targets.
TARGETS = [("sigmoid", "x"), ("tanh", "x"), ("linear", "W"), ("linear", "b"), ("half_sse", "y"),
           ("article", "delta_k"), ("article", "delta_j"), ("article", "w_kj")]
NUMBERS = ["2", "3", r"\frac{1}{2}", r"\frac{3}{4}", "0.25", "1.5"]
TINY = ["10^{-16}", "10^{-12}", r"\frac{1}{10^{14}}"]  # a perturbation the precision must still see


def where(source):
    return {"op": None, "chain": source} if source == "article" else {"op": source, "chain": None}


class Formulas:
    """Random formulas over one target's names: atoms are its tensors written with its own letters (an
    atom with a letter the target lacks is summed over it), combined by +, -, products, fractions with a
    positive denominator and e^{...}."""

    def __init__(self, source, wrt, rng):
        world = world_of(**where(source))
        target = world.target(_quantity(source, wrt))
        sample = source == "article"
        own = set(target.letters(sample))
        self.rng = rng
        self.derived = _derived_tex(world, target, sample).split(" = ", 1)[1]
        self.atoms = []  # (its name, its letters, those of them summed over)
        self.size_of = {}  # letter -> the name of its range
        for e in world.table.entries:
            if e.kind in ("size", "constant", "objective") or not e.rank:
                continue
            letters = e.letters_in(sample)
            extra = [c for c in letters if c not in own]
            if len(extra) > 1 or len(set(letters)) != len(letters):
                continue
            self.atoms.append((e.head(), letters, extra))
            for letter, size in zip(letters, e.shape_in(sample)):
                self.size_of[letter] = next(s.names[0] for s in world.table.entries if s.value == size)
        self.letters = sorted({c for _, letters, _ in self.atoms for c in letters})
        self.moves = self._moves(source, wrt)

    def atom(self):
        return self.atom_tex(*self.rng.choice(self.atoms))

    def expression(self, depth=2):
        if depth == 0 or self.rng.random() < 0.3:
            return self.atom() if self.rng.random() < 0.8 else self.rng.choice(NUMBERS)
        a, b = self.expression(depth - 1), self.expression(depth - 1)
        return self.rng.choice([f"({a} + {b})", f"({a} - {b})", f"{a} \\cdot {b}",
                                rf"\frac{{{a}}}{{1 + ({b})^{{2}}}}", f"e^{{{a} - {b}}}"])

    def equal(self) -> str:
        """The derived result, written with a random expression R that cancels."""
        d, r = self.derived, self.expression()
        positive = rf"(1 + ({self.expression()})^{{2}})"
        c = self.rng.choice(NUMBERS)
        return self.rng.choice([f"{d} + {r} - ({r})", f"{r} + \\left({d}\\right) - ({r})",
                                rf"\frac{{\left({d}\right) {positive}}}{{{positive}}}",
                                rf"{c} \left({d}\right) + (1 - {c}) \left({d}\right)"])

    def perturbed(self) -> list:
        """(how, formula): the derived result changed by a term, a factor, a sign, an index."""
        d, r = self.derived, self.expression(1)
        atom, moved = self.rng.choice(self.moves)
        small = self.rng.choice(NUMBERS + TINY)
        return [("term", rf"{d} + {small} (1 + ({r})^{{2}})"),  # never 0
                ("factor", rf"\left({d}\right) (1 + {small} (1 + ({self.expression(1)})^{{2}}))"),  # never 1
                ("sign", rf"-\left({d}\right) + {atom} - {atom}"),
                ("index", rf"{d} + {r} - ({r.replace(atom, moved, 1)})" if atom in r else f"{d} + {atom} - {moved}")]

    def _moves(self, source, wrt):
        """(atom, the same name with its letters changed: two exchanged, or one replaced by another letter
        of the notation) where the changed one is still a name of the target's notation and another element."""
        found = []
        for head, letters, extra in self.atoms:
            tex = self.atom_tex(head, letters, extra)
            free = [at for at, c in enumerate(letters) if c not in extra]  # a summed letter is a dummy
            variants = [tuple(reversed(letters))] if len(set(letters)) > 1 else []
            variants += [tuple(c if p != at else other for p, c in enumerate(letters))
                         for at in free for other in self.letters if other not in (letters[at], *extra)]
            variants += [tuple(c if p != at else f"{self.size_of[c]} - 1 - {c}" for p, c in enumerate(letters))
                         for at in free]  # read backwards along one axis
            for changed in variants:
                moved = self.atom_tex(head, changed, [c for c in extra if any(c in part for part in changed)])
                try:
                    if read(moved, wrt=wrt, **where(source)) != read(tex, wrt=wrt, **where(source)):
                        found.append((tex, moved))
                except ValueError:  # no such name with those letters (y_i in the article)
                    continue
        return found

    @staticmethod
    def atom_tex(head, letters, extra):
        tex = f"{head}_{{{(',' if any(len(c) > 1 for c in letters) else '').join(letters)}}}"
        return "".join(rf"\sum_{{{c}}} " for c in extra) + tex


def _quantity(source, wrt):
    names = names_of(**where(source))
    from derive.verifier.reading import _wrt_target
    return _wrt_target(names, wrt, names.table.default_sample)[0].entry


def _cases():
    rng = random.Random(SEED)
    cases = []
    for source, wrt in TARGETS:
        formulas = Formulas(source, wrt, rng)
        for _ in range(ROUNDS):
            cases.append((source, wrt, "equal", formulas.equal()))
            cases += [(source, wrt, how, text) for how, text in formulas.perturbed()]
    return cases


CASES = _cases()


@pytest.mark.parametrize("source, wrt, how, text", CASES,
                         ids=[f"{s}-{w}-{h}-{n}" for n, (s, w, h, _) in enumerate(CASES)])
def test_a_random_formula_verifies_as_it_was_built(source, wrt, how, text):
    verdict = verify(text, wrt=wrt, **where(source))
    if how == "equal":
        assert verdict.equivalent and verdict.exit_code == 0, verdict.report()
    else:
        assert not verdict.equivalent and verdict.exit_code == 1, verdict.report()


def test_the_cases_are_many_and_the_same_every_time():
    assert _cases() == CASES
    assert len(CASES) == 5 * ROUNDS * len(TARGETS)
    assert {how for *_, how, _ in CASES} == {"equal", "term", "factor", "sign", "index"}
