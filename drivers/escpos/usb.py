"""USB transport for ESC/POS receipt printers, on pyusb.

The one required primitive pair is ``_raw(data)`` / ``_read(size)``; ReceiptPrinter builds
everything else on it. The transport survives unplug/replug: a USB error marks it closed and the
next call finds the device again by VID:PID (the old handle is dead after a replug, and the
kernel's usblp driver has bound the new device, so it is detached again).

pyusb is imported where a device is opened or read, never at module level: every agent's config names this
model, and an agent without a USB device must not load pyusb (tests/test_lean_roles.py).
"""

from __future__ import annotations

import errno
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from config.base import Section
from drivers.escpos.errors import PrinterAccessDenied, PrinterDisconnected, PrinterNotFound, PrinterStalled
from drivers.usbdev import dispose, hex_id

if TYPE_CHECKING:
    import usb.core
    import usb.util

log = logging.getLogger(__name__)

_DENIED = {errno.EACCES, errno.EPERM, errno.EBUSY}


class UsbPrinterConfig(Section):
    type: Literal["usb"] = Field(default="usb", description="Transport selector: an ESC/POS printer on USB")
    vendor_id: int = Field(
        ge=0, le=0xFFFF, description='USB vendor id as `lsusb` shows it; strings are hex ("0x0416" or "0416")'
    )
    product_id: int = Field(
        ge=0, le=0xFFFF, description='USB product id as `lsusb` shows it; strings are hex ("0x5011" or "5011")'
    )
    interface: int = Field(default=0, ge=0, le=255, description="bInterfaceNumber of the printer interface")
    out_endpoint: int | None = Field(
        default=None, description="Bulk OUT endpoint address (0x01-0x0F); the interface's first bulk OUT when unset"
    )
    in_endpoint: int | None = Field(
        default=None, description="Bulk IN endpoint address (0x81-0x8F); the interface's first bulk IN when unset"
    )
    timeout_ms: int = Field(
        default=1000, ge=10, le=60_000, description="How long a write or a status reply may take before giving up"
    )

    @field_validator("vendor_id", "product_id", "out_endpoint", "in_endpoint", mode="before")
    @classmethod
    def _hex(cls, value: object) -> object:
        return hex_id(value)

    @model_validator(mode="after")
    def _directions(self) -> UsbPrinterConfig:
        if self.out_endpoint is not None and not 0x01 <= self.out_endpoint <= 0x0F:
            raise ValueError(f"out_endpoint {self.out_endpoint:#04x} is not an OUT endpoint address (0x01-0x0F)")
        if self.in_endpoint is not None and not 0x81 <= self.in_endpoint <= 0x8F:
            raise ValueError(f"in_endpoint {self.in_endpoint:#04x} is not an IN endpoint address (0x81-0x8F)")
        return self

    @property
    def device_name(self) -> str:
        return f"usb {self.vendor_id:04x}:{self.product_id:04x}"


class UsbTransport:
    """An ESC/POS printer on USB. ``backend`` is a pyusb backend; None lets pyusb pick libusb."""

    def __init__(self, config: UsbPrinterConfig, backend: Any = None) -> None:
        self.config = config
        self._backend = backend
        self._dev: Any = None
        self._out: Any = None
        self._in: Any = None

    @property
    def name(self) -> str:
        return self.config.device_name

    @property
    def is_open(self) -> bool:
        return self._dev is not None

    @property
    def can_read(self) -> bool:
        """Whether the printer has a bulk IN endpoint (write-only printers cannot report status)."""
        return self._in is not None

    def open(self) -> None:
        """Find the printer by VID:PID, take it from the kernel driver, claim it, pick its endpoints."""
        import usb.core
        import usb.util

        if self._dev is not None:
            return
        cfg = self.config
        try:
            dev = usb.core.find(idVendor=cfg.vendor_id, idProduct=cfg.product_id, backend=self._backend)
        except usb.core.NoBackendError:
            raise PrinterNotFound(self.name, "pyusb has no backend: install Debian's libusb-1.0-0") from None
        except usb.core.USBError as exc:
            raise PrinterNotFound(self.name, f"USB enumeration failed: {exc}") from exc
        if dev is None:
            raise PrinterNotFound(self.name)
        try:
            out_ep, in_ep = self._claim(dev)
        except usb.core.USBError as exc:
            usb.util.dispose_resources(dev)
            raise self._open_error(exc) from exc
        except (ValueError, PrinterNotFound):
            usb.util.dispose_resources(dev)
            raise
        self._dev, self._out, self._in = dev, out_ep, in_ep
        log.info("opened printer %s (out %#04x, in %s)", self.name, out_ep.bEndpointAddress, self._in_address())

    def close(self) -> None:
        """Release the interface and the handle. Safe to call twice and after an unplug."""
        dev, self._dev, self._out, self._in = self._dev, None, None, None
        if dev is not None:
            dispose(dev, self.name, log)

    def __enter__(self) -> UsbTransport:
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _raw(self, data: bytes) -> None:
        """Send bytes to the printer (opening it first if needed)."""
        import usb.core

        self.open()
        sent = 0
        while sent < len(data):
            try:
                n = self._dev.write(self._out, data[sent:], self.config.timeout_ms)
            except usb.core.USBTimeoutError as exc:
                raise PrinterStalled(self.name, f"write timed out after {self.config.timeout_ms} ms") from exc
            except usb.core.USBError as exc:
                raise self._lost(exc) from exc
            if n <= 0:
                raise PrinterStalled(self.name, "the printer accepted 0 bytes")
            sent += n

    def _read(self, size: int, timeout_ms: int | None = None) -> bytes | None:
        """Read up to ``size`` bytes; None when nothing came within the timeout (or there is no IN
        endpoint). Ask for at least a packet: a shorter request overflows when the printer sends one."""
        import usb.core

        self.open()
        if self._in is None:
            return None
        try:
            data = self._dev.read(self._in, max(size, self._in.wMaxPacketSize), timeout_ms or self.config.timeout_ms)
        except usb.core.USBTimeoutError:
            return None
        except usb.core.USBError as exc:
            raise self._lost(exc) from exc
        return bytes(data)

    # -- internals ---------------------------------------------------------------------------

    def _claim(self, dev: Any) -> tuple[Any, Any]:
        """Detach usblp, make sure a configuration is set, find the endpoints, claim the interface."""
        import usb.core
        import usb.util

        intf_number = self.config.interface
        try:
            if dev.is_kernel_driver_active(intf_number):
                # usblp binds every USB printer; while it does, we cannot claim the interface.
                dev.detach_kernel_driver(intf_number)
        except NotImplementedError:  # backends without kernel drivers (macOS, Windows, some sims)
            pass
        try:
            config = dev.get_active_configuration()
        except usb.core.USBError:
            config = None
        if config is None:
            dev.set_configuration()
            config = dev.get_active_configuration()
        intf = usb.util.find_descriptor(config, bInterfaceNumber=intf_number)
        if intf is None:
            raise PrinterNotFound(self.name, f"the device has no interface {intf_number}")
        out_ep = self._endpoint(intf, usb.util.ENDPOINT_OUT, self.config.out_endpoint)
        if out_ep is None:
            raise PrinterNotFound(self.name, f"interface {intf_number} has no bulk OUT endpoint")
        in_ep = self._endpoint(intf, usb.util.ENDPOINT_IN, self.config.in_endpoint)
        if in_ep is None and self.config.in_endpoint is not None:
            raise PrinterNotFound(self.name, f"interface {intf_number} has no endpoint {self.config.in_endpoint:#04x}")
        usb.util.claim_interface(dev, intf_number)
        return out_ep, in_ep

    @staticmethod
    def _endpoint(intf: Any, direction: int, address: int | None) -> Any:
        import usb.util

        def match(ep: Any) -> bool:
            if address is not None:
                return bool(ep.bEndpointAddress == address)
            return bool(
                usb.util.endpoint_direction(ep.bEndpointAddress) == direction
                and usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
            )

        return usb.util.find_descriptor(intf, custom_match=match)

    def _in_address(self) -> str:
        return "none" if self._in is None else f"{self._in.bEndpointAddress:#04x}"

    def _open_error(self, exc: usb.core.USBError) -> PrinterNotFound | PrinterAccessDenied | PrinterDisconnected:
        if exc.errno in _DENIED:
            return PrinterAccessDenied(self.name, str(exc))
        if exc.errno == errno.ENODEV:
            return PrinterDisconnected(self.name, str(exc))
        return PrinterNotFound(self.name, str(exc))

    def _lost(self, exc: usb.core.USBError) -> PrinterDisconnected:
        log.warning("printer %s lost: %s", self.name, exc)
        self.close()
        return PrinterDisconnected(self.name, str(exc))
