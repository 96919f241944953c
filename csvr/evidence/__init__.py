"""Evidence for the STM (paper appendix section 2, docs/design.md section 4): the LIF
temporal-sensitivity figure (`csvr lif-response`) and the noise-robustness experiment
(`csvr experiment noise`)."""

from __future__ import annotations
