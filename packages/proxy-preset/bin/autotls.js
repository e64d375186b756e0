#!/usr/bin/env node
// The `autotls` command (src/cli.ts, built to dist/cli.js). A committed file, so the workspace links the bin at
// install time, before the first build.
import '../dist/cli.js'
