"""Link functions ``g`` of the single-index task, written in the normalised Hermite basis.
Tested in tests/test_icl_links_task.py.

Glossary:
    z        the index <beta, x>, a standard Gaussian for x ~ N(0, I_d) and |beta| = 1
    He_k     the probabilists' Hermite polynomial (He_0 = 1, He_1 = z, He_2 = z^2 - 1, ...)
    h_k      He_k / sqrt(k!), orthonormal under N(0, 1): E[h_j(z) h_k(z)] = [j == k]
    c_k      the Hermite coefficient E[g(z) h_k(z)], so g = sum_k c_k h_k
    ie       information exponent: the lowest k >= 1 with c_k != 0. Correlational methods
             (kernels, linear attention) need about d^ie samples to find beta.
    ge       generative exponent: the lowest k >= 1 such that some transform T(y) has
             E[T(y) He_k(z)] != 0. A method that may transform the labels first (the
             gate does) needs about d^ge samples. For a polynomial g, ge = 1 unless g is
             even (then no T(y) can correlate with an odd function of z) and ge = 2.

A link is a finite Hermite series. ``make_link("he3")`` gives h_3 = (z^3 - 3 z) / sqrt 6;
``Link([0, 1, 0, 0.5])`` gives h_1 + 0.5 h_3. The coefficients the link reports are measured
by Gauss-Hermite quadrature of its own values, not copied from the constructor, so ie and
ge come out of the same computation a student would do by hand.
"""
from __future__ import annotations

import math

import numpy as np

from ..validate import check_choice

MAX_DEGREE = 12  # quadrature with 40 nodes is exact for polynomials of degree < 80


def hermite_he(k, z):
    """Probabilists' Hermite polynomial He_k(z) by the recurrence He_{k+1} = z He_k - k He_{k-1}.

    Args:
        k: degree >= 0.  z: array of any shape.
    Returns:
        He_k(z), same shape as z.
    """
    z = np.asarray(z, dtype=np.float64)
    prev, cur = np.ones_like(z), z.copy()
    if k == 0:
        return prev
    for j in range(1, k):
        prev, cur = cur, z * cur - j * prev
    return cur


def gauss_hermite_coefficients(fn, degree, n_nodes=40):
    """Hermite coefficients ``c_k = E[fn(z) h_k(z)]``, k = 0..degree, by quadrature.

    numpy's ``hermegauss`` integrates against exp(-z^2/2); dividing the weights by
    sqrt(2 pi) turns the sum into an expectation under N(0, 1).
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    weights = weights / math.sqrt(2 * math.pi)
    values = fn(nodes)
    return np.array([np.sum(weights * values * hermite_he(k, nodes)) / math.sqrt(math.factorial(k))
                     for k in range(degree + 1)])


def _sphere_even_moment(p, r):
    """E[u^(2p)] for u the first coordinate of a point uniform on the sphere S^(r-1):
    (2p - 1)!! / (r (r + 2) ... (r + 2p - 2))."""
    num = 1.0
    for i in range(p):
        num *= (2 * i + 1) / (r + 2 * i)
    return num


class Link:
    """A link ``g(z) = sum_k coeffs[k] * He_k(z) / sqrt(k!)``.

    Args:
        coeffs: Hermite coefficients c_0..c_K in the normalised basis (K <= 12).
        name: a label for tables and plots; defaults to a readable form of the series.
    Attributes:
        coeffs: the coefficients measured back by quadrature (K + 1,).
        ie, ge: information and generative exponents (see the module docstring).
        second_moment: E[g(z)^2] = sum_k c_k^2, the zero predictor's error, used to
            normalise test errors.
    """

    def __init__(self, coeffs, name=None):
        given = np.asarray(coeffs, dtype=np.float64)
        if given.ndim != 1 or given.size == 0 or given.size > MAX_DEGREE + 1:
            raise ValueError(f"coeffs must be a 1-d list of 1..{MAX_DEGREE + 1} Hermite coefficients, got {coeffs!r}")
        if not np.all(np.isfinite(given)):
            raise ValueError(f"coeffs must be finite, got {coeffs!r}")
        self._given = given
        degree = given.size - 1
        measured = gauss_hermite_coefficients(self.__call__, degree)
        measured[np.abs(measured) < 1e-10] = 0.0
        self.coeffs = measured
        nonzero = [k for k in range(1, degree + 1) if measured[k] != 0.0]
        if not nonzero:
            raise ValueError(f"coeffs must have a nonzero coefficient of degree >= 1 (a constant link "
                             f"carries no information about beta), got {coeffs!r}")
        self.ie = nonzero[0]
        self.is_even = all(k % 2 == 0 for k in nonzero)
        self.ge = 2 if self.is_even else 1
        self.second_moment = float(np.sum(measured ** 2))
        self.name = name or " + ".join(f"{c:g} h{k}" for k, c in enumerate(measured) if c != 0.0)

    def __call__(self, z):
        """g(z), elementwise."""
        z = np.asarray(z, dtype=np.float64)
        out = np.zeros_like(z)
        for k, c in enumerate(self._given):
            if c != 0.0:
                out += c * hermite_he(k, z) / math.sqrt(math.factorial(k))
        return out

    def context_free_optimum(self, norm_sq, r):
        """E[g(<beta, x>) | x] with beta uniform on the unit sphere of the r-dim subspace.

        The best prediction for a query when the context is ignored but the subspace and
        the prior of beta are known. Only |x_I|^2 = t^2 matters (a zonal average):
        <beta, x> = t u with u the first coordinate of a uniform point on S^(r-1), and
            He_k(t u) = k! sum_m (-1)^m (t u)^(k - 2m) / (m! (k - 2m)! 2^m),
        so E_u[He_k(t u)] uses the sphere moments E[u^(2p)] = (2p-1)!! / prod_i (r + 2i).
        Odd k average to 0 (u and -u are equally likely). For He_2: (t^2 / r - 1) / sqrt 2.

        Args:
            norm_sq: |x_I|^2, the squared norm of x's projection on the subspace, any shape.
            r: the subspace dimension.
        Returns:
            the conditional mean, same shape as norm_sq.
        """
        t2 = np.asarray(norm_sq, dtype=np.float64)
        out = np.full_like(t2, self._given[0])
        for k in range(2, self._given.size, 2):
            c = self._given[k]
            if c == 0.0:
                continue
            he = np.zeros_like(t2)
            for m in range(k // 2 + 1):
                p = (k - 2 * m) // 2  # (t u)^(k - 2m) = (t^2)^p u^(2p)
                coef = (-1) ** m * math.factorial(k) / (math.factorial(m) * math.factorial(k - 2 * m) * 2 ** m)
                he += coef * t2 ** p * _sphere_even_moment(p, r)
            out += c * he / math.sqrt(math.factorial(k))
        return out

    def __repr__(self):
        return f"Link({self.name}, ie={self.ie}, ge={self.ge})"


LINK_NAMES = tuple(f"he{k}" for k in range(1, 7))


def make_link(spec):
    """Build a link from a name: ``"he1"`` .. ``"he6"`` (He_k / sqrt(k!)), or
    ``"poly:c0:c1:...:cK"`` for the series sum_k c_k He_k / sqrt(k!). A Link passes through."""
    if isinstance(spec, Link):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"link must be a Link or a name like 'he3' or 'poly:0:1:0:0.5', got {spec!r}")
    name = spec.strip().lower()
    if name.startswith("poly:"):
        try:
            coeffs = [float(c) for c in name[5:].split(":")]
        except ValueError:
            raise ValueError(f"link {spec!r}: 'poly:' must be followed by ':'-separated numbers") from None
        return Link(coeffs, name=spec)
    check_choice("link", name, LINK_NAMES)
    k = int(name[2:])
    coeffs = np.zeros(k + 1)
    coeffs[k] = 1.0
    return Link(coeffs, name=f"He{k}")
