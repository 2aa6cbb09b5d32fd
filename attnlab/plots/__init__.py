"""Figures from tidy tables (pandas frames in the schema of ``attnlab.tables``), one style."""
from .style import model_palette, save_figure, style, styled, use_style

__all__ = ["model_palette", "save_figure", "style", "styled", "use_style"]
