"""The USB half of every simulated twin: one device with one interface and bulk endpoints, written as a
pyusb backend (usb.backend.IBackend).

This machine's kernel has no USB, so the hardware is replaced one layer down: pyusb's own
``usb.core.find`` / ``Device.write`` / ``Device.read`` (descriptor parsing, configuration, claiming,
endpoint lookup) run unchanged against a subclass of this, exactly as they run against libusb. What a
subclass adds is the device itself: its descriptors' class fields, and ``bulk_write`` / ``bulk_read``.

Modelled here, as libusb reports it:
- ``unplug()`` / ``plug()``: every handle to the old device dies with ENODEV, ``find`` sees nothing while
  unplugged, and a replug is a new device (new generation, new address);
- a kernel driver (usblp for a printer) bound to the interface: set_configuration and claim answer EBUSY
  until it is detached; ``held_elsewhere`` is another program holding the interface;
- transfers on an unclaimed interface are refused (ENOENT).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from types import SimpleNamespace

import usb.backend
import usb.core
import usb.util

PACKET_SIZE = 64
INTERFACE = 0

# libusb error codes, with the errno pyusb's libusb1 backend attaches to them.
NO_DEVICE = ("No such device (it may have been disconnected)", -4, errno.ENODEV)
BUSY = ("Resource busy", -6, errno.EBUSY)
NOT_FOUND = ("Entity not found", -5, errno.ENOENT)
TIMEOUT = ("Operation timed out", -7, errno.ETIMEDOUT)


@dataclass(frozen=True, slots=True)
class SimDevice:
    """What enumerate_devices yields. A replug makes a new one; handles to the old one are dead."""

    generation: int


@dataclass(frozen=True, slots=True)
class Handle:
    device: SimDevice


class SimulatedUsbDevice(usb.backend.IBackend):
    """One USB device with interface 0 and bulk endpoints ``out_ep`` (and ``in_ep``)."""

    interface_class: tuple[int, int, int] = (0xFF, 0, 0)  # class, subclass, protocol: vendor-specific
    attributes = 0x80  # bmAttributes: bus-powered
    has_strings = False  # whether the device descriptor names manufacturer, product and serial strings

    def __init__(self, *, vendor_id: int, product_id: int, out_ep: int, in_ep: int | None, kernel_driver: bool) -> None:
        super().__init__()
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.out_ep = out_ep
        self.in_ep = in_ep
        self.plugged = True
        self.held_elsewhere = False  # another program has claimed the interface
        self.opens = 0
        self.detaches = 0
        self._has_kernel_driver = kernel_driver
        self._kernel_driver = kernel_driver
        self._generation = 1
        self._configuration = 1
        self._claimed: set[int] = set()

    @property
    def claimed(self) -> frozenset[int]:
        """Interfaces a host has claimed now."""
        return frozenset(self._claimed)

    def unplug(self) -> None:
        self.plugged = False
        self._claimed.clear()

    def plug(self) -> None:
        """Reconnect: a new device on the bus, configured by the kernel, its kernel driver bound again."""
        self.plugged = True
        self._generation += 1
        self._kernel_driver = self._has_kernel_driver
        self._configuration = 1
        self._claimed.clear()

    # -- IBackend: descriptors -----------------------------------------------------------------

    def enumerate_devices(self) -> list[SimDevice]:
        return [SimDevice(self._generation)] if self.plugged else []

    def get_parent(self, dev: SimDevice) -> None:
        return None

    def get_device_descriptor(self, dev: SimDevice) -> SimpleNamespace:
        strings = (1, 2, 3) if self.has_strings else (0, 0, 0)
        return SimpleNamespace(
            bLength=18, bDescriptorType=usb.util.DESC_TYPE_DEVICE, bcdUSB=0x0200,
            bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0, bMaxPacketSize0=64,
            idVendor=self.vendor_id, idProduct=self.product_id, bcdDevice=0x0100,
            iManufacturer=strings[0], iProduct=strings[1], iSerialNumber=strings[2], bNumConfigurations=1,
            bus=1, address=dev.generation + 1, port_number=1, port_numbers=(1,), speed=usb.util.SPEED_FULL,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: SimDevice, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(config)
        return SimpleNamespace(
            bLength=9, bDescriptorType=usb.util.DESC_TYPE_CONFIG, wTotalLength=9 + 9 + 7 * len(self._endpoints()),
            bNumInterfaces=1, bConfigurationValue=1, iConfiguration=0, bmAttributes=self.attributes, bMaxPower=50,
            extra_descriptors=[],
        )  # fmt: skip

    def get_interface_descriptor(self, dev: SimDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError((intf, alt, config))  # pyusb iterates alternate settings until IndexError
        cls, subclass, proto = self.interface_class
        return SimpleNamespace(
            bLength=9, bDescriptorType=usb.util.DESC_TYPE_INTERFACE, bInterfaceNumber=INTERFACE,
            bAlternateSetting=0, bNumEndpoints=len(self._endpoints()),
            bInterfaceClass=cls, bInterfaceSubClass=subclass, bInterfaceProtocol=proto,
            iInterface=0, extra_descriptors=[],
        )  # fmt: skip

    def get_endpoint_descriptor(self, dev: SimDevice, ep: int, intf: int, alt: int, config: int) -> SimpleNamespace:
        endpoints = self._endpoints()
        if (intf, alt, config) != (0, 0, 0) or not 0 <= ep < len(endpoints):
            raise IndexError((ep, intf, alt, config))
        return SimpleNamespace(
            bLength=7, bDescriptorType=usb.util.DESC_TYPE_ENDPOINT, bEndpointAddress=endpoints[ep],
            bmAttributes=usb.util.ENDPOINT_TYPE_BULK, wMaxPacketSize=PACKET_SIZE, bInterval=0,
            bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )  # fmt: skip

    def _endpoints(self) -> tuple[int, ...]:
        return (self.out_ep,) if self.in_ep is None else (self.out_ep, self.in_ep)

    # -- IBackend: handles, configuration, interfaces ------------------------------------------

    def open_device(self, dev: SimDevice) -> Handle:
        self._alive(dev)
        self.opens += 1
        return Handle(dev)

    def close_device(self, dev_handle: Handle) -> None:
        return None  # like libusb, closing a dead handle is fine

    def set_configuration(self, dev_handle: Handle, config_value: int) -> None:
        self._alive(dev_handle.device)
        if self._kernel_driver:
            raise usb.core.USBError(*BUSY)
        self._configuration = config_value

    def get_configuration(self, dev_handle: Handle) -> int:
        self._alive(dev_handle.device)
        return self._configuration

    def set_interface_altsetting(self, dev_handle: Handle, intf: int, altsetting: int) -> None:
        self._alive(dev_handle.device)

    def claim_interface(self, dev_handle: Handle, intf: int) -> None:
        self._alive(dev_handle.device)
        if self._kernel_driver or self.held_elsewhere:
            raise usb.core.USBError(*BUSY)
        self._claimed.add(intf)

    def release_interface(self, dev_handle: Handle, intf: int) -> None:
        self._alive(dev_handle.device)
        self._claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: Handle, intf: int) -> bool:
        self._alive(dev_handle.device)
        return self._kernel_driver

    def detach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        self._alive(dev_handle.device)
        if not self._kernel_driver:
            raise usb.core.USBError(*NOT_FOUND)
        self._kernel_driver = False
        self.detaches += 1

    def attach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        self._alive(dev_handle.device)
        self._kernel_driver = self._has_kernel_driver

    def clear_halt(self, dev_handle: Handle, ep: int) -> None:
        self._alive(dev_handle.device)

    def reset_device(self, dev_handle: Handle) -> None:
        self._alive(dev_handle.device)

    def _alive(self, dev: SimDevice) -> None:
        if not self.plugged or dev.generation != self._generation:
            raise usb.core.USBError(*NO_DEVICE)

    def _claimed_or_raise(self, dev_handle: Handle, intf: int) -> None:
        self._alive(dev_handle.device)
        if intf not in self._claimed:
            raise usb.core.USBError(*NOT_FOUND)  # libusb refuses transfers on an unclaimed interface
