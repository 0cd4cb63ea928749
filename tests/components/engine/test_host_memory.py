"""scaling.host_mmap_mib: glibc's mmap threshold, fixed so freed activations go back to the OS."""

import platform
import subprocess
import sys
import textwrap

import pytest

from components.config import ConfigError
from components.engine import mmap_threshold_mib
from pipelines.cli.args import load_experiment

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's M_MMAP_THRESHOLD is glibc's")


def test_auto_fixes_the_threshold_only_for_checkpointed_cpu_training():
    assert mmap_threshold_mib("auto", True, "cpu") == 4.0
    assert mmap_threshold_mib("auto", False, "cpu") == 0.0
    assert mmap_threshold_mib("auto", True, "cuda") == 0.0  # CUDA tensors never go through malloc
    assert mmap_threshold_mib(16, False, "cpu") == 16.0
    assert mmap_threshold_mib(0, True, "cpu") == 0.0


def test_the_config_key_takes_auto_or_mib():
    assert load_experiment([], ["scaling.host_mmap_mib=8"]).scaling.host_mmap_mib == 8.0
    assert load_experiment([], []).scaling.host_mmap_mib == "auto"
    with pytest.raises((ConfigError, ValueError), match="host_mmap_mib"):
        load_experiment([], ["scaling.host_mmap_mib=-1"])
    with pytest.raises((ConfigError, ValueError), match="host_mmap_mib"):
        load_experiment([], ["scaling.host_mmap_mib=big"])


PROBE = textwrap.dedent("""
    import sys
    import torch
    from components.engine import mallinfo, set_mmap_threshold

    if sys.argv[1] != "0":
        assert set_mmap_threshold(float(sys.argv[1]))
    torch.empty(16 * 2**20, dtype=torch.uint8)  # made and freed: freeing a mapped block raises glibc's threshold
    before = mallinfo().hblks
    x = torch.empty(2 * 2**20, dtype=torch.uint8)  # a 2 MiB activation
    print(mallinfo().hblks - before)
""")


@glibc
@pytest.mark.parametrize("mib, mapped", [("0", 0), ("1", 1)])
def test_a_fixed_threshold_maps_blocks_glibc_would_keep_in_its_heap(mib, mapped):
    out = subprocess.run([sys.executable, "-c", PROBE, mib], capture_output=True, text=True, check=True)
    assert int(out.stdout) == mapped  # 1: its own mapping, returned to the OS on free
