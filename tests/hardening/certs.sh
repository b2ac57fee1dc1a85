# tests/hardening/certs.sh — make a throw-away PKI in a folder (sourced; never commit keys).
#   make_ca DIR NAME              DIR/NAME.key, DIR/NAME.pem (self-signed CA)
#   make_cert DIR CA NAME CN      DIR/NAME.key, DIR/NAME.pem signed by DIR/CA (SAN 127.0.0.1)
# RSA 2048: the BCP 195 suites DCMTK offers are RSA ones.
make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=$2" \
        -keyout "$1/$2.key" -out "$1/$2.pem" >/dev/null 2>&1
}
make_cert() {
    local dir=$1 ca=$2 name=$3 cn=$4
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$cn" \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" >/dev/null 2>&1 &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/$name.ext" &&
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca.key" \
        -CAcreateserial -days 2 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.pem" >/dev/null 2>&1
}
