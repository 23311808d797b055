package dht

import (
	"errors"

	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func isDataLoss(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == grpccodes.DataLoss
}
