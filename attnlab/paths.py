"""File-system paths as the API takes them: one ``PathLike`` for every module."""
from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
