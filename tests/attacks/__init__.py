"""Attack suites against the code sandbox and the code grader, each case run for real and checked
from the outside: :mod:`tests.attacks.hostile` (escapes and generic cheats) and
:mod:`tests.attacks.redteam` (the adversarial reviews' attacks on the grader). Run by
``tests/rewards/test_sandbox*.py`` and by ``scripts/check_rewards.py``; not part of the installed
library.
"""
