"""Compute engines. Each engine package exposes the same four functions:

``adapting_kernel(guide, geom, spec, mask)``
    the adapting kernel K, shape (B, Ck, *kernel_size, *out_size);
``adapting_kernel_vjp(grad_K, guide, geom, spec, mask, needs)``
    dict with the requested of ``"guide"``, ``"alpha"``, ``"lam"``;
``pac_forward(x, weight, bias, geom, groups, *, K, guide, spec, mask)``
    PAC output; weight in (Cout, Cin/groups, *k) layout for both the forward
    and the transposed op (the front end rearranges transposed weights); with
    ``K is None and guide is None`` it is a plain convolution;
``pac_vjp(grad_out, x, weight, geom, groups, *, K, guide, spec, mask, needs)``
    dict with the requested of ``"input"``, ``"weight"``, ``"bias"``,
    ``"adapting"`` (when K was given), ``"guide"``, ``"alpha"``, ``"lam"``.

Engines receive validated, C-contiguous arrays of one float dtype and a
resolved :class:`pacnd._geometry.Geometry`; they never validate. Which engine
runs is decided in one place only: :mod:`pacnd._dispatch`.
"""
