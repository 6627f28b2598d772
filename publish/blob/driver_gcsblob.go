//go:build !keyd_no_gcs

package blob

import _ "gocloud.dev/blob/gcsblob" // gs://: Google Cloud Storage

func init() { drivers["gs"] = true }
