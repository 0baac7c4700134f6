from gan_dist.cli import main

raise SystemExit(main())
