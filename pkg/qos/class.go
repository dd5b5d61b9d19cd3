package qos

import (
	"fmt"
	"strings"
)

// Class is a pod attachment's traffic class. The numeric values are the
// ones lxc_info.flags carries (bpf/lib/qos.h, datapath.QoSClass).
type Class uint8

// The classes. None is QoS off for the attachment: its packets are not
// marked, and on a node with a QoS tree they share the normal class's leaf
// (HTB's default class).
const (
	None   Class = 0
	High   Class = 1
	Normal Class = 2
	Low    Class = 3
)

// Classes lists the classes with a leaf on the uplink, highest first.
var Classes = []Class{High, Normal, Low}

// String is the class's name ("" for None).
func (c Class) String() string {
	switch c {
	case None:
		return ""
	case High:
		return "high"
	case Normal:
		return "normal"
	case Low:
		return "low"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// ParseClass parses a class name: high, normal or low (any case); the empty
// string is None.
func ParseClass(s string) (Class, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return None, nil
	case "high":
		return High, nil
	case "normal":
		return Normal, nil
	case "low":
		return Low, nil
	}
	return None, fmt.Errorf("unknown qos class %q (want high, normal or low)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (c Class) MarshalText() ([]byte, error) {
	if c > Low {
		return nil, fmt.Errorf("qos class %d out of range", uint8(c))
	}
	return []byte(c.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (c *Class) UnmarshalText(b []byte) error {
	v, err := ParseClass(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Minor is the HTB minor of the class's shared leaf on the uplink's root
// qdisc 1: (1:10, 1:20, 1:30); 0 for None.
func (c Class) Minor() uint16 {
	if c == None || c > Low {
		return 0
	}
	return uint16(c) << 4
}

// Weight is the class's share of the uplink in percent: its HTB assured
// rate. The shares add up to 100, so when every class saturates the link
// they split it 80:15:5. HTB hands spare bandwidth to the highest priority
// that wants it, so high alone with low takes 95%, and any class alone
// takes the whole link (every ceil is the link rate).
func (c Class) Weight() int {
	switch c {
	case High:
		return 80
	case Normal:
		return 15
	case Low:
		return 5
	}
	return 0
}

// Prio is the class's HTB priority (0 is served first).
func (c Class) Prio() uint32 {
	if c == None {
		return uint32(Normal) - 1
	}
	return uint32(c) - 1
}
