"""platform-backup: nightly restic backups of a platform host, and their restores.

Shipped by roles/backup to /usr/local/lib/platform-backup/platform_backup and run as
/usr/local/sbin/platform-backup (a wrapper that starts `python3 -I` on cli.main).
Every subcommand reads /etc/backup/backup.json, written by the role. Modules, one job each:

  config     the job's configuration (repositories, paths, retention)
  util       logging, status files, the host-wide lock, errors
  restic     running restic against a named repository (secrets never in arguments)
  pg         PostgreSQL: consistent dumps with per-table row counts, restores
  manifest   what a snapshot must contain (checksums, modes, row counts) and its proof
  backup     run, check, init, add-key, credential, watchdog
  restore    restore and the restore drill
  cli        the command line
"""
