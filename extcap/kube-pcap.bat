@echo off
rem kube-pcap in Wireshark on Windows: copy this file into Wireshark's personal extcap
rem folder (Help > About Wireshark > Folders > "Personal Extcap path", usually
rem %APPDATA%\Wireshark\extcap) and restart Wireshark. It runs kubectl-pcap from npm's
rem global folder (npm install -g), or from KUBE_PCAP_PLUGIN when set.
setlocal
if not "%KUBE_PCAP_PLUGIN%"=="" ( "%KUBE_PCAP_PLUGIN%" %* & exit /b %ERRORLEVEL% )
set "PATH=%PATH%;%APPDATA%\npm;%ProgramFiles%\nodejs"
kubectl-pcap.cmd %*
exit /b %ERRORLEVEL%
