from fidan.cli import main

raise SystemExit(main())
