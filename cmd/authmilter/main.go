// Command authmilter is a milter daemon for Postfix and Sendmail that
// DKIM-signs outbound mail and authenticates inbound mail (DKIM, SPF, DMARC).
package main

import (
	"fmt"
	"os"

	"github.com/authmilter/authmilter/keys"
)

const usage = `usage: authmilter <command> [flags]

Commands:
  run      [-config FILE]                 run the daemon (default config: built-in,
                                          or /etc/authmilter/authmilter.toml if present)
  check    [-config FILE] [-print]        validate a config (and its keys) without starting;
                                          -print shows the effective config with defaults
  sign     [-config FILE] [-from-ip IP]   sign a message from stdin as the daemon would,
                                          print the signed message
  verify   [-config FILE]                 verify the DKIM signatures of a message from stdin
  keygen   -d DOMAIN [-s SELECTOR] [-a rsa-2048|rsa-3072|rsa-4096|ed25519|rsa-1024] [-t y] [-config FILE]
           [-format zone|value|nsupdate|json] [-no-publish] [-force]
                                          make a key in the key table, print its DNS record
                                          (and publish it when [keys.publish] is configured;
                                          -force: even over a record this installation did not publish)
  keys     [-config FILE] [-json] [-d DOMAIN]
                                          list keys with their DNS state and whether they sign;
                                          exit 1 if an active key's record is not right
  keys record -d DOMAIN -s SELECTOR [-format zone|value|nsupdate|json] [-config FILE]
                                          print the DNS record of any key again (retired ones too)
  rotate   [-config FILE] (-d DOMAIN | -all) [-grace 7d] [-dry-run] [-force] [-force-publish] [-v]
                                          make the next key when the newest is older than
                                          keys.rotate_after, retire superseded keys after the
                                          grace period; safe to run from cron
  import-opendkim -keytable FILE -signingtable FILE [-config FILE] [-dry-run] [-force]
                                          copy the keys of an OpenDKIM KeyTable into the key table
                                          and print its SigningTable as [[signing.rule]] entries
  reports  send|list|import|summary [-config FILE] ...
                                          DMARC aggregate reports (RFC 9990): send a day's
                                          reports, list what was recorded and sent, import and
                                          sum up reports received as a domain owner; see
                                          authmilter reports help
  doctor   DOMAIN... [-ip IP]... [-selector S]... [-config FILE] [-json|-csv] [-f FILE] [-timeout 60s]
                                          check domains' SPF, DMARC, DKIM, sending hosts, MX,
                                          MTA-STS and TLS reporting as receivers see them (with
                                          -config and no domain: the key table's); exit 0 ok,
                                          1 warnings, 2 errors, 3 bad command line, config or output
  version                                 print the version

Every command reads the same TOML config; see README.md for its keys.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(args)
	case "check":
		err = cmdCheck(args)
	case "sign":
		err = cmdSign(args)
	case "verify":
		err = cmdVerify(args)
	case "keygen":
		err = cmdKeygen(args)
	case "keys":
		err = cmdKeys(args)
	case "rotate":
		err = cmdRotate(args)
	case "import-opendkim":
		err = cmdImportOpenDKIM(args)
	case "reports":
		err = cmdReports(args)
	case "doctor":
		err = cmdDoctor(args)
	case "version", "-version", "--version":
		fmt.Println("authmilter", version)
		fmt.Println("signer:", keys.SignerImplementation())
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "authmilter: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		var ee exitError
		if asExit(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "authmilter "+cmd+":", err)
		os.Exit(1)
	}
}
