//go:build !keyd_no_azure

package bucket

import _ "gocloud.dev/blob/azureblob" // azblob://: Azure Blob Storage

func init() { drivers["azblob"] = true }
