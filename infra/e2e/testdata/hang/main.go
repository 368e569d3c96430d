// Command hang never ends and ignores SIGTERM and SIGINT: what a hostile
// customer puts in place of rm, sh and python3 in their container.
package main

import (
	"os/signal"
	"syscall"
	"time"
)

func main() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for {
		time.Sleep(time.Hour)
	}
}
