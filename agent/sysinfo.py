"""Facts about the node for the ``get_*_info`` built-ins, from psutil and /proc.

Blocking (they read /proc and /sys): the built-ins call them in a worker
thread. Result shapes are documented in ``docs/builtins.md``.
"""

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import psutil


def cpu_info() -> list[dict[str, Any]]:
    """One entry per logical cpu."""
    blocks = _cpuinfo_blocks()
    frequencies = _safe(lambda: psutil.cpu_freq(percpu=True), []) or []
    cores = psutil.cpu_count(logical=False) or 0
    infos = []
    for index in range(psutil.cpu_count(logical=True) or 1):
        block = blocks[index] if index < len(blocks) else {}
        mhz = frequencies[index].current if index < len(frequencies) else _number(block.get("cpu MHz"))
        infos.append({
            "cpu": index,
            "vendor_id": block.get("vendor_id", ""),
            "family": block.get("cpu family", ""),
            "model": block.get("model", ""),
            "stepping": int(_number(block.get("stepping"))),
            "physical_id": block.get("physical id", ""),
            "core_id": block.get("core id", ""),
            "cores": int(_number(block.get("cpu cores")) or cores),
            "model_name": block.get("model name", platform.processor()),
            "mhz": mhz or 0.0,
            "cache_size": int(_number(block.get("cache size", "").split(" ")[0])),
            "flags": block.get("flags", "").split(),
        })
    return infos


def mem_info() -> dict[str, Any]:
    """Virtual memory (bytes, ``percent`` used), and swap under ``swap``."""
    memory = psutil.virtual_memory()._asdict()
    memory["swap"] = psutil.swap_memory()._asdict()
    return memory


def disk_info() -> list[dict[str, Any]]:
    """Mounted partitions, each with its usage (``null`` when it cannot be read)."""
    disks = []
    for partition in psutil.disk_partitions(all=False):
        usage = _safe(lambda mountpoint=partition.mountpoint: psutil.disk_usage(mountpoint)._asdict(), None)
        disks.append({"device": partition.device, "mountpoint": partition.mountpoint, "fstype": partition.fstype,
                      "opts": partition.opts, "usage": usage})
    return disks


def nic_info() -> list[dict[str, Any]]:
    """Network interfaces with their addresses and link state."""
    stats = psutil.net_if_stats()
    nics = []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        link = stats.get(name)
        mac = next((address.address for address in addresses if address.family == psutil.AF_LINK), "")
        nics.append({
            "name": name,
            "hardwareaddr": mac,
            "addrs": [{"family": _family(address.family), "address": address.address, "netmask": address.netmask,
                       "broadcast": address.broadcast} for address in addresses if address.family != psutil.AF_LINK],
            "up": bool(link and link.isup),
            "mtu": link.mtu if link else 0,
            "speed": link.speed if link else 0,
        })
    return nics


def os_info() -> dict[str, Any]:
    release = _os_release()
    boot_time = int(psutil.boot_time())
    system, role = _virtualization()
    return {
        "hostname": socket.gethostname(),
        "uptime": int(time.time()) - boot_time,
        "boot_time": boot_time,
        "procs": len(psutil.pids()),
        "os": platform.system().lower(),
        "platform": release.get("ID", platform.system().lower()),
        "platform_family": (release.get("ID_LIKE") or release.get("ID", "")).split(" ")[0],
        "platform_version": release.get("VERSION_ID", platform.release()),
        "virtualization_system": system,
        "virtualization_role": role,
    }


def _cpuinfo_blocks() -> list[dict[str, str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    blocks = []
    for chunk in text.strip().split("\n\n"):
        block = {}
        for line in chunk.splitlines():
            key, _, value = line.partition(":")
            block[key.strip()] = value.strip()
        blocks.append(block)
    return blocks


def _os_release() -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        return {key.strip(): value.strip().strip('"') for key, value in pairs}
    return {}


def _virtualization() -> tuple[str, str]:
    """``(system, role)`` as far as can be told without privileges; ``("", "")`` on bare metal."""
    if os.path.exists("/.dockerenv"):
        return "docker", "guest"
    environ = _read("/proc/1/environ")
    if "container=lxc" in environ:
        return "lxc", "guest"
    if "container=" in environ:
        return "container", "guest"
    if os.path.exists("/proc/xen/capabilities"):
        return "xen", "host" if "control_d" in _read("/proc/xen/capabilities") else "guest"
    vendor = (_read("/sys/class/dmi/id/sys_vendor") + " " + _read("/sys/class/dmi/id/product_name")).lower()
    for marker, system in (("kvm", "kvm"), ("qemu", "kvm"), ("vmware", "vmware"), ("virtualbox", "vbox"),
                           ("microsoft", "hyperv"), ("xen", "xen"), ("firecracker", "firecracker")):
        if marker in vendor:
            return system, "guest"
    if "hypervisor" in _read("/proc/cpuinfo").split("\n\n", 1)[0]:
        return "unknown", "guest"
    return "", ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _family(family: int) -> str:
    names: dict[int, str] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
    return names.get(family, str(family))


def _number(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def _safe(function: Any, default: Any) -> Any:
    try:
        return function()
    except (OSError, RuntimeError, psutil.Error):
        return default
