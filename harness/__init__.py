"""kharness: boot real kernels under QEMU and test how drivers map memory."""

__version__ = "0.1.0"
