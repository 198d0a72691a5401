from mien.cli.main import main

raise SystemExit(main())
