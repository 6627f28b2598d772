//go:build !keyd_no_s3

package bucket

import _ "gocloud.dev/blob/s3blob" // s3://: S3 (and S3-compatible stores)

func init() { drivers["s3"] = true }
