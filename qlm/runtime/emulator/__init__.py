"""A GPU-free vLLM 0.33 look-alike: the simulator's engine model behind vLLM's HTTP API."""

from qlm.runtime.emulator.app import create_app
from qlm.runtime.emulator.core import EmulatorConfig, EmulatorCore
from qlm.runtime.emulator.server import EmulatorServer, free_port, run_emulator

__all__ = ["EmulatorConfig", "EmulatorCore", "EmulatorServer", "create_app", "free_port",
           "run_emulator"]
