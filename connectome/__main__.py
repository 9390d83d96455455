from connectome.cli import main

main()
