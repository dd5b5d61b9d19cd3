package datapath

import (
	"errors"
	"net"
	"net/netip"
)

var errTODO = errors.New("datapath: not implemented yet")

type bpfObjects struct{}

func open(Config) (*Datapath, error)                              { return nil, errTODO }
func (d *Datapath) close() error                                  { return errTODO }
func remove(string) error                                         { return errTODO }
func (d *Datapath) attachUplink(int) error                        { return errTODO }
func (d *Datapath) attachPrefilter(int) error                     { return errTODO }
func (d *Datapath) detachUplink(int) error                        { return errTODO }
func (d *Datapath) attachEndpoint(int) error                      { return errTODO }
func (d *Datapath) detachEndpoint(int) error                      { return errTODO }
func (d *Datapath) upsertLocal(LocalEndpoint) error               { return errTODO }
func (d *Datapath) upsertRemote(RemoteEndpoint) error             { return errTODO }
func (d *Datapath) deleteEndpoint(uint32, netip.Addr) error       { return errTODO }
func (d *Datapath) upsertNode(netip.Addr, net.HardwareAddr) error { return errTODO }
func (d *Datapath) deleteNode(netip.Addr) error                   { return errTODO }
func (d *Datapath) endpoints() ([]Entry, error)                   { return nil, errTODO }
func (d *Datapath) drops() (map[DropReason]uint64, error)         { return nil, errTODO }
