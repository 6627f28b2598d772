//go:build !keyd_no_gcs

package bucket

import _ "gocloud.dev/blob/gcsblob" // gs://: Google Cloud Storage

func init() { drivers["gs"] = true }
