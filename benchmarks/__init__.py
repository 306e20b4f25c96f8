"""pushpop's benchmark suite: pushpop against hand-written SQL, on the same server, in one run.

Run it with ``python -m benchmarks`` (``make bench``); ``--help`` lists the options.

Every figure is measured for pushpop (through its public sync ``Client``, or a real
``pushpop.Worker``) and, where one makes sense, for a baseline of plain psycopg statements on
a plain table doing the same work, several rounds each, so the ratio pushpop/baseline means
something even on a noisy machine. A figure's note says when its baseline column is
something else (``work``) or absent (``bloat``).

Adding a figure: build :class:`benchmarks.figures.Figure` objects in a module of their own
(see ``throughput.py`` or ``scaling.py``) and list that module in ``benchmarks.catalog``.
"""
