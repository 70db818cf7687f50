//! The Helm chart `charts/otau-operator`: lint, render, server-side dry-run apply.
