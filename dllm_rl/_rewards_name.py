"""The two import names of the rewards package.

- ``dllm_rl.rewards`` is the package's name. It is installed from the top-level ``rewards/``
  folder (``pyproject.toml``'s ``package-dir``, as ``recipes/`` installs as ``dllm_rl.recipes``).
  In a source checkout that folder is not inside ``dllm_rl/``; :class:`RewardsFinder` maps the
  name to it there, so the checkout and an install import the same way.
- ``rewards`` is its old name, kept for one release: ``import rewards`` or
  ``from rewards.X import ...`` gives the very module objects of ``dllm_rl.rewards`` (one copy, one
  registry) with a ``DeprecationWarning``. Only in a process that has imported ``dllm_rl``, which
  every dllm-rl command (and the reward plugins they load) has. A top-level ``rewards`` package of
  another project keeps its name: the alias steps aside when one is on the path.

The finder goes first on ``sys.meta_path`` (so that, in a checkout run from its root, the old name
does not load the ``rewards/`` folder a second time under it) and answers for these names only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings

NAME = "dllm_rl.rewards"
OLD_NAME = "rewards"
_CHECKOUT_FOLDER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "rewards"
)


class _Alias(importlib.abc.Loader):
    """Loads ``rewards[.X]`` as the already imported ``dllm_rl.rewards[.X]``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec  # the import system set the alias's spec: keep the real one


def _warn(name: str) -> None:
    # stacklevel 3: past this function and find_spec; `warnings` skips importlib's own frames, so
    # the warning points at the line that imported the old name.
    warnings.warn(
        f"the package `{OLD_NAME}` is now `{NAME}`: import {NAME + name[len(OLD_NAME) :]} "
        f"instead (the old name goes away in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )


class RewardsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == NAME:
            return self._checkout_spec(path)
        if name == OLD_NAME:
            found = importlib.machinery.PathFinder.find_spec(name, path)
            if found is not None and not _is_ours(found):
                return None  # another project's `rewards`
        elif not (name.startswith(OLD_NAME + ".") and _aliased()):
            return None
        target = NAME + name[len(OLD_NAME) :]
        if importlib.util.find_spec(target) is None:
            return None
        _warn(name)
        return importlib.util.spec_from_loader(name, _Alias(target))

    @staticmethod
    def _checkout_spec(path):
        if importlib.machinery.PathFinder.find_spec(NAME, path) is not None:
            return None  # installed: dllm_rl/rewards/ exists, the normal machinery loads it
        init = os.path.join(_CHECKOUT_FOLDER, "__init__.py")
        if not os.path.isfile(init):
            return None
        return importlib.util.spec_from_file_location(
            NAME, init, submodule_search_locations=[_CHECKOUT_FOLDER]
        )


def _is_ours(spec) -> bool:
    origin = spec.origin or ""
    return bool(origin) and os.path.dirname(os.path.realpath(origin)) == _CHECKOUT_FOLDER


def _aliased() -> bool:
    old = sys.modules.get(OLD_NAME)
    return old is not None and old is sys.modules.get(NAME)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, RewardsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, RewardsFinder())
