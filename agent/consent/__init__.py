"""Consent on the device: the prompt before a session, the indicator during it."""

from .ui import ConsentUI, ConsentUnavailable, Indicator, IndicatorInfo, PromptAnswer, PromptRequest

__all__ = ["ConsentUI", "ConsentUnavailable", "Indicator", "IndicatorInfo", "PromptAnswer", "PromptRequest"]
