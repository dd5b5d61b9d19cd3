// Package service computes what the data plane needs to load-balance a
// VPC's services: the Maglev table of a backend set (Maglev).
package service
