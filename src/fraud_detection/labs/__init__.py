"""The workshop's labs as code (``fraud lab start|check|solve N``, ``make lab-start LAB=N``).

Each lab has a state folder of its own (``state/labs/lab-N``) that ``start`` builds from
nothing on a small simulated world, a ``check`` that looks at what a participant would
see (the champion alias, the gate's record, a signal, a CT run record, the exit code of a
check command) and says in one line what is missing, and a reference ``solve``.
``workspace.py`` holds what labs share (the folder, its environment, simulating, CT runs,
a copy of the repository); ``catalog.py`` holds one small definition per lab.
"""
