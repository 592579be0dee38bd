// Command controlplane runs a real Kubernetes control plane for tests: an embedded etcd and
// the real kube-apiserver in one process, on 127.0.0.1, with RBAC on.
//
// Why: there is no container engine on the test machines, so kind/k3d are out. Like
// controller-runtime's envtest, we run the real API server, so CRD validation (OpenAPI and
// CEL), the status subresource, printer columns and RBAC are the real ones, not a fake's.
//
// The same binary is also a kubectl of the same version: invoked as "kubectl" (a symlink)
// or as "controlplane kubectl ...", it runs kubectl's own command tree.
//
// Usage: controlplane [--dir DIR] [--port N] [--shutdown-timeout D] [-- extra kube-apiserver flags]
// Prints "KUBECONFIG=<path>" on stdout once /readyz answers; SIGTERM/SIGINT stop it within a
// few seconds, open watches included.
//
// With --dir, everything that makes the cluster what it is lives in DIR and is reused when
// present: etcd's data, the CA (and its key), the serving certificate, the ServiceAccount
// signing key, the admin token and the ports (the API server's and etcd's). Only what is
// missing is generated. So a restart on the same DIR comes back as the same cluster, on the
// same port, and a client holding the old kubeconfig (or a ServiceAccount token, whose issuer
// is the server URL) keeps working. Without --dir, a temp dir is used and removed on exit.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl(os.Args[1:])
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "kubectl" {
		runKubectl(os.Args[2:])
		return
	}
	if err := runControlPlane(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func runKubectl(args []string) {
	os.Args = append([]string{"kubectl"}, args...)
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

type info struct {
	Server     string `json:"server"`
	Kubeconfig string `json:"kubeconfig"`
	CAFile     string `json:"caFile"`
	Token      string `json:"token"`
	Issuer     string `json:"issuer"`
	EtcdURL    string `json:"etcdURL"`
}

func runControlPlane() error {
	dir := flag.String("dir", "", "working directory, reused when it exists (default: a new temp dir, removed on exit)")
	port := flag.Int("port", 0, "kube-apiserver secure port (0: the one saved in --dir, else a free one)")
	shutdownTimeout := flag.Duration("shutdown-timeout", 15*time.Second,
		"after SIGTERM/SIGINT, give up waiting for kube-apiserver and etcd to stop after this long (exit 1)")
	flag.Parse()

	workDir := *dir
	if workDir == "" {
		d, err := os.MkdirTemp("", "gcpcall-controlplane-")
		if err != nil {
			return err
		}
		workDir = d
		defer os.RemoveAll(d)
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return err
	}
	// info.json is written again when this run is ready; a stale one would mislead readers.
	if err := os.Remove(filepath.Join(workDir, "info.json")); err != nil && !os.IsNotExist(err) {
		return err
	}

	ports, err := choosePorts(workDir, *port)
	if err != nil {
		return err
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(workDir, "etcd"), ports.EtcdClient, ports.EtcdPeer)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	etcdStopped := false
	defer func() {
		if !etcdStopped {
			etcd.Close()
		}
	}()

	pki, err := loadOrWritePKI(workDir)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	server := fmt.Sprintf("https://127.0.0.1:%d", ports.API)
	kubeconfig := filepath.Join(workDir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, pki.caPEM, pki.token); err != nil {
		return err
	}

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports.API),
		"--cert-dir=" + filepath.Join(workDir, "certs"),
		"--tls-cert-file=" + pki.servingCert,
		"--tls-private-key-file=" + pki.servingKey,
		"--client-ca-file=" + pki.caFile,
		"--token-auth-file=" + pki.tokenFile,
		"--service-account-issuer=" + server,
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--api-audiences=" + server,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		// A test server has no load balancer to drain: stop quickly. Without these the HTTP
		// server's Shutdown waits up to --request-timeout (60 s) for every open watch.
		// send-retry-after bounds that Shutdown to 2 s (after in-flight non-watch requests
		// drain), and the watch grace period ends open watches actively when shutdown begins.
		"--shutdown-delay-duration=0s",
		"--shutdown-send-retry-after=true",
		"--shutdown-watch-termination-grace-period=1s",
		"-v=0",
	}
	args = append(args, flag.Args()...)

	go announceWhenReady(server, pki, info{
		Server: server, Kubeconfig: kubeconfig, CAFile: pki.caFile, Token: pki.token,
		Issuer: server, EtcdURL: etcdURL,
	}, workDir)

	// kube-apiserver installs its own SIGTERM/SIGINT handler (its context is cancelled on the
	// first signal, a second one exits at once); this one only starts our deadline.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	cmd := apiserverapp.NewAPIServerCommand()
	cmd.SetArgs(args)
	apiDone := make(chan error, 1)
	go func() { apiDone <- cmd.Execute() }()

	var apiErr error
	select {
	case apiErr = <-apiDone:
		// Stopped without a signal: a startup error, or a real failure.
		if apiErr == nil {
			apiErr = fmt.Errorf("kube-apiserver stopped unexpectedly")
		}
	case <-signals:
		deadline := time.NewTimer(*shutdownTimeout)
		defer deadline.Stop()
		select {
		case apiErr = <-apiDone:
		case <-deadline.C:
			return fmt.Errorf("kube-apiserver did not stop within %s of the signal", *shutdownTimeout)
		}
	}
	if apiErr != nil {
		return apiErr
	}

	// kube-apiserver has stopped; now etcd (its Close waits for its own in-flight requests).
	etcdStopped = true
	closed := make(chan struct{})
	go func() { etcd.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(*shutdownTimeout):
		return fmt.Errorf("etcd did not stop within %s", *shutdownTimeout)
	}
	return nil
}

// portsFile records the ports of a --dir's cluster, so a restart comes back on them.
const portsFile = "ports.json"

type savedPorts struct {
	API        int `json:"api"`
	EtcdClient int `json:"etcdClient"`
	EtcdPeer   int `json:"etcdPeer"`
}

// choosePorts returns the ports for this run: the API port from --port, else the one saved in
// dir (an error if it is taken: the kubeconfig and the ServiceAccount issuer name it), else a
// free one; etcd's saved ports when still free (clients never see them), else free ones.
func choosePorts(dir string, flagPort int) (savedPorts, error) {
	var saved savedPorts
	path := filepath.Join(dir, portsFile)
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &saved); err != nil {
			return saved, fmt.Errorf("%s: %w", path, err)
		}
	} else if !os.IsNotExist(err) {
		return saved, err
	}
	p := savedPorts{API: flagPort}
	if p.API == 0 && saved.API != 0 {
		if !portFree(saved.API) {
			return p, fmt.Errorf("port %d (saved in %s) is in use; pass --port to choose another", saved.API, path)
		}
		p.API = saved.API
	}
	taken := map[int]bool{p.API: true}
	pick := func(prev int) (int, error) {
		if prev != 0 && !taken[prev] && portFree(prev) {
			taken[prev] = true
			return prev, nil
		}
		for {
			n, err := freePort()
			if err != nil {
				return 0, err
			}
			if !taken[n] {
				taken[n] = true
				return n, nil
			}
		}
	}
	var err error
	if p.API == 0 {
		if p.API, err = pick(0); err != nil {
			return p, err
		}
	}
	if p.EtcdClient, err = pick(saved.EtcdClient); err != nil {
		return p, err
	}
	if p.EtcdPeer, err = pick(saved.EtcdPeer); err != nil {
		return p, err
	}
	data, _ := json.MarshalIndent(p, "", "  ")
	return p, os.WriteFile(path, append(data, '\n'), 0o600)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string, clientPort, peerPort int) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", fmt.Errorf("not ready after 60s")
	}
	return e, clientURL.String(), nil
}

type pkiFiles struct {
	caFile, servingCert, servingKey, saKey, tokenFile, token string
	caPEM                                                    []byte
}

// loadOrWritePKI reuses the CA, serving certificate, ServiceAccount key and admin token found
// in dir and generates only what is missing (a new CA means a new serving certificate).
func loadOrWritePKI(dir string) (*pkiFiles, error) {
	p := &pkiFiles{
		caFile:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
	}
	caKeyFile := filepath.Join(dir, "ca.key")
	now := time.Now()

	caCert, caKey, err := loadCA(p.caFile, caKeyFile)
	if err != nil {
		return nil, err
	}
	newCA := caCert == nil
	if newCA {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "gcpcall-test-ca"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return nil, err
		}
		if caCert, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
		caKey = key
		if err := writePEM(caKeyFile, "EC PRIVATE KEY", mustMarshalEC(key)); err != nil {
			return nil, err
		}
		if err := writePEM(p.caFile, "CERTIFICATE", der); err != nil {
			return nil, err
		}
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})

	if newCA || !servingPairValid(p.servingCert, p.servingKey, caCert) {
		srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		if err != nil {
			return nil, err
		}
		srvTmpl := &x509.Certificate{
			SerialNumber: serial.Add(serial, big.NewInt(2)),
			Subject:      pkix.Name{CommonName: "kube-apiserver"},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		}
		srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		if err := writePEM(p.servingKey, "EC PRIVATE KEY", mustMarshalEC(srvKey)); err != nil {
			return nil, err
		}
		if err := writePEM(p.servingCert, "CERTIFICATE", srvDER); err != nil {
			return nil, err
		}
	}

	if data, err := os.ReadFile(p.saKey); err == nil {
		if block, _ := pem.Decode(data); block == nil {
			return nil, fmt.Errorf("%s: no PEM block", p.saKey)
		}
	} else if os.IsNotExist(err) {
		saKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		if err := writePEM(p.saKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
			return nil, err
		}
	} else {
		return nil, err
	}

	if data, err := os.ReadFile(p.tokenFile); err == nil {
		// token,user,uid,"group" (what we write below).
		p.token, _, _ = strings.Cut(strings.TrimSpace(string(data)), ",")
		if p.token == "" {
			return nil, fmt.Errorf("%s: no token", p.tokenFile)
		}
	} else if os.IsNotExist(err) {
		tok := make([]byte, 24)
		if _, err := rand.Read(tok); err != nil {
			return nil, err
		}
		p.token = hex.EncodeToString(tok)
		// The admin is in system:masters, which RBAC always allows.
		line := p.token + ",admin,admin,\"system:masters\"\n"
		if err := writeFileAtomic(p.tokenFile, []byte(line)); err != nil {
			return nil, err
		}
	} else {
		return nil, err
	}
	return p, nil
}

// loadCA returns the CA in certFile/keyFile, or nils when either file is missing.
func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if os.IsNotExist(err) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if os.IsNotExist(err) {
		return nil, nil, nil // an older dir without the CA's key: a new CA
	} else if err != nil {
		return nil, nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not an ECDSA key", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// servingPairValid reports whether the serving certificate and key exist, match, and are
// signed by ca for 127.0.0.1.
func servingPairValid(certFile, keyFile string, ca *x509.Certificate) bool {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return false
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	_, err = cert.Verify(x509.VerifyOptions{
		DNSName: "127.0.0.1", Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		CurrentTime: time.Now().Add(24 * time.Hour),
	})
	return err == nil
}

func mustMarshalEC(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err) // only fails for curves Go does not know
	}
	return der
}

func writePEM(path, blockType string, der []byte) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}))
}

// writeFileAtomic writes a temp file and renames it, so an interrupted start never leaves a
// half-written key or token file that the next start would refuse.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	content := strings.Join([]string{
		"apiVersion: v1",
		"kind: Config",
		"clusters:",
		"- name: controlplane",
		"  cluster:",
		"    server: " + server,
		"    certificate-authority-data: " + base64.StdEncoding.EncodeToString(caPEM),
		"users:",
		"- name: admin",
		"  user:",
		"    token: " + token,
		"contexts:",
		"- name: controlplane",
		"  context:",
		"    cluster: controlplane",
		"    user: admin",
		"current-context: controlplane",
		"",
	}, "\n")
	return os.WriteFile(path, []byte(content), 0o600)
}

// announceWhenReady waits for /readyz, lets anonymous clients read the ServiceAccount
// issuer discovery documents (as a real cluster's issuer is public for Google's STS), then
// writes info.json and prints the kubeconfig path.
func announceWhenReady(server string, pki *pkiFiles, inf info, dir string) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	httpClient := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		req, _ := http.NewRequest(http.MethodGet, server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+pki.token)
		resp, err := httpClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "controlplane: /readyz did not answer in 3 minutes")
			os.Exit(1)
		}
		time.Sleep(200 * time.Millisecond)
	}

	cfg := &rest.Config{
		Host:            server,
		BearerToken:     pki.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: pki.caPEM},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "service-account-issuer-discovery-anonymous"},
		RoleRef: rbacv1.RoleRef{
			APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole",
			Name: "system:service-account-issuer-discovery",
		},
		Subjects: []rbacv1.Subject{{
			APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:unauthenticated",
		}},
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(context.Background(), crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		fmt.Fprintln(os.Stderr, "controlplane: issuer discovery binding:", err)
		os.Exit(1)
	}

	data, _ := json.MarshalIndent(inf, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "info.json"), data, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
	fmt.Printf("KUBECONFIG=%s\n", inf.Kubeconfig)
}
