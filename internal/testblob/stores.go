package testblob

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyd-dev/keyd/internal/testnet"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// bucket is the name of every store's bucket (container).
const bucket = "keyd-pub"

// S3 credentials of SeaweedFS's one writing identity; anonymous callers
// may read.
const (
	S3AccessKey = "keydtest"
	S3SecretKey = "keydtestsecret-0123456789"
)

// S3 starts SeaweedFS (weed mini: master, volume, filer and the S3
// gateway in one process) with the bucket made and two identities: keyd's
// (S3AccessKey) and anonymous readers.
func S3(t testing.TB) *Server {
	weed := binary(t, "weed")
	dir := t.TempDir()
	conf := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(conf, []byte(`{"identities":[
  {"name":"anonymous","actions":["Read"]},
  {"name":"keyd","credentials":[{"accessKey":"`+S3AccessKey+`","secretKey":"`+S3SecretKey+`"}],"actions":["Admin","Read","List","Tagging","Write"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testnet.FreePorts(t, 8)
	data := filepath.Join(dir, "data")
	_ = os.Mkdir(data, 0o700)
	s := &Server{Scheme: "s3", Bucket: bucket, cmd: exec.Command(weed, "mini", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port="+port(p[0]), "-master.port.grpc="+port(p[1]), "-volume.port="+port(p[2]), "-volume.port.grpc="+port(p[3]),
		"-filer.port="+port(p[4]), "-filer.port.grpc="+port(p[5]), "-s3.port="+port(p[6]), "-s3.port.grpc="+port(p[7]),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-s3.config="+conf, "-bucket="+bucket)}
	endpoint := "http://127.0.0.1:" + port(p[6])
	s.URL = "s3://" + bucket + "/site?endpoint=" + endpoint + "&use_path_style=true&region=us-east-1"
	s.Public = endpoint + "/" + bucket + "/site"
	s.Env = []string{"AWS_ACCESS_KEY_ID=" + S3AccessKey, "AWS_SECRET_ACCESS_KEY=" + S3SecretKey, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none")}
	s.start(t, func() bool {
		// The bucket is there once a missing key of it is NoSuchKey.
		body, ok := get(endpoint + "/" + bucket + "/site/none")
		return ok && strings.Contains(body, "NoSuchKey")
	})
	return s
}

// GCS starts fake-gcs-server (in memory) with the bucket made. Objects
// are read anonymously at /BUCKET/NAME.
func GCS(t testing.TB) *Server {
	bin := binary(t, "fake-gcs-server")
	p := port(testnet.FreePorts(t, 1)[0])
	host := "127.0.0.1:" + p
	s := &Server{Scheme: "gs", Bucket: bucket, cmd: exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", p,
		"-backend", "memory", "-public-host", host, "-external-url", "http://"+host, "-log-level", "error")}
	s.URL = "gs://" + bucket + "/site"
	s.Public = "http://" + host + "/" + bucket + "/site"
	s.Env = []string{"STORAGE_EMULATOR_HOST=" + host}
	s.start(t, func() bool { return answers("http://" + host + "/storage/v1/b") })
	resp, err := http.Post("http://"+host+"/storage/v1/b?project=keyd-test", "application/json", strings.NewReader(`{"name":"`+bucket+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fake-gcs-server: creating the bucket: %s", resp.Status)
	}
	return s
}

// Azurite's well-known development account.
const (
	azureAccount = "devstoreaccount1"
	azureKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azure starts Azurite's blob service (in memory) with the container made,
// its blobs readable anonymously.
func Azure(t testing.TB) *Server {
	bin := binary(t, "azurite-blob")
	p := port(testnet.FreePorts(t, 1)[0])
	endpoint := "http://127.0.0.1:" + p + "/" + azureAccount
	s := &Server{Scheme: "azblob", Bucket: bucket, cmd: exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", p,
		"--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent")}
	conn := "DefaultEndpointsProtocol=http;AccountName=" + azureAccount + ";AccountKey=" + azureKey + ";BlobEndpoint=" + endpoint + ";"
	s.URL = "azblob://" + bucket + "/site"
	s.Public = endpoint + "/" + bucket + "/site"
	s.Env = []string{"AZURE_STORAGE_CONNECTION_STRING=" + conn, "AZURE_STORAGE_IS_LOCAL_EMULATOR=true", "AZURE_STORAGE_DOMAIN=127.0.0.1:" + p}
	s.start(t, func() bool { return answers(endpoint + "?comp=list") })
	c, err := azblob.NewClientFromConnectionString(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	blobs := container.PublicAccessTypeBlob
	if _, err := c.CreateContainer(ctx, bucket, &azblob.CreateContainerOptions{Access: &blobs}); err != nil {
		t.Fatalf("azurite: creating the container: %v", err)
	}
	return s
}

// Setenv sets the server's Env in t's process (for a target opened in
// the test itself).
func (s *Server) Setenv(t *testing.T) {
	for _, kv := range s.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// get reads url: its body, and whether it answered.
func get(url string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return b.String(), true
}
