"""The network: STM (spiking temporal modulator), stems, unified transformer, decoder, RRDB."""

from __future__ import annotations

from csvr.models.csvr_net import MODALITIES, VARIANTS, CSVRNet
from csvr.models.lif import ThresholdLIFNode
from csvr.models.stm import SpikingTemporalModulator

__all__ = ["CSVRNet", "MODALITIES", "SpikingTemporalModulator", "ThresholdLIFNode", "VARIANTS"]
