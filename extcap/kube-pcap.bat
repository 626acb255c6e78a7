@echo off
rem kube-pcap in Wireshark on Windows: copy this file into Wireshark's personal extcap
rem folder (Help > About Wireshark > Folders > "Personal Extcap path", usually
rem %APPDATA%\Wireshark\extcap) and restart Wireshark. It runs kubectl-pcap from npm's
rem global folder (npm install -g), or from KUBE_PCAP_PLUGIN when set.
rem
rem Nothing is looked up in the current directory, which Wireshark does not choose for us:
rem cmd.exe searches it before PATH unless NoDefaultCurrentDirectoryInExePath is set, and
rem kubectl-pcap is run by its full path, with node.exe's folder first on PATH.
setlocal
set "NoDefaultCurrentDirectoryInExePath=1"
if not "%KUBE_PCAP_PLUGIN%"=="" ( "%KUBE_PCAP_PLUGIN%" %* & exit /b %ERRORLEVEL% )
set "PATH=%ProgramFiles%\nodejs;%APPDATA%\npm;%PATH%"
if not exist "%APPDATA%\npm\kubectl-pcap.cmd" (
  echo kube-pcap: %APPDATA%\npm\kubectl-pcap.cmd not found: npm install -g kube-pcap, or set KUBE_PCAP_PLUGIN 1>&2
  exit /b 1
)
call "%APPDATA%\npm\kubectl-pcap.cmd" %*
exit /b %ERRORLEVEL%
